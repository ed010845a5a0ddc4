"""``make bench``: how fast the package's two hot loops run, and proof the fast path keeps the science.

Who should use it: anyone changing :mod:`interpretgan.fast`, the attacks or the training loop, or
trying the package on a new machine. ``python -m interpretgan.bench`` prints one table measured side
by side in one run, on the CPU and (when present) on a CUDA GPU:

- the device's measured peak: fp32 and bf16 matrix multiply, and fp32 / bf16 convolution, GFLOP/s;
- PGD-40 image-steps/s on the paper's MNIST model at batch 256: plain fp32, torchattacks' PGD, and the
  fast path, with the ratios and the fraction of the measured peak (the larger of matmul and conv, in
  the loop's precision) each reaches;
- natural training images/s at the paper's batch 128: plain fp32 and the fast path;
- InterpretGAN training images/s (one step: f, G(C(l)), critic and generator updates, the lazy gradient
  penalty as often as it runs) at 32x32 for conv1 at the default widths and batch: fp32 and the fast path;
  the same for the CelebA VGG16's block3 at 64x64 (the face GAN step);
- Table 3's training step (ATTA-1 + TRADES on CIFAR-10 at the default profile's schedule and widths, VGG16 x3/8
  and WRN-10-2): milliseconds per batch of 64 with one thread and with every core, and the minutes per 38-epoch
  model that implies (on a CPU, models train one per core side by side: two threads barely beat one);
- 05's live epsilon slider (shipped default weights, 200 digits, natural and ATTA models): the seconds a
  slider step takes, and the seconds one new epsilon costs (PGD-40, Acc_i at every layer), which the widget
  pays for each point of its grid when it is made;
- the science at full scale (CPU only, unless ``--skip-science``): robust accuracy under PGD-40 and
  FGSM on all 10,000 test digits, fast against fp32, on the default profile's natural model, each at
  an epsilon where it lies between 20% and 80%; and the test accuracy of that model trained on the fast
  path against the same model trained in fp32 (trained once through the artifact cache, ~8 minutes
  the first time); and one InterpretGAN layer (fc3) fitted on the default schedule both ways, with the
  share of 2,000 test digits whose explanation f labels right (about 3 + 5 minutes the first time).

It writes the table to ``<artifacts>/bench.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch
import torchattacks
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from . import cache, fast, gan, paths, zoo
from .attacks import PGD, FGSM, run_attack
from .cache import write_json
from .data import mnist32
from .models import SmallCNN, build, freeze
from .profiles import get_profile
from .training import TRAININGS, natural_step

PGD_BATCH, TRAIN_BATCH = 256, 128
GAN_LAYER = "conv1"  # the layer with the largest compression network (Table 4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, min_seconds: float = 2.0, warmup: int = 2) -> float:
    """Seconds per call of ``fn``: the best of three runs of enough calls to last ``min_seconds`` / 3."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_seconds / 3:
        fn()
        calls += 1
    _sync(device)
    best = (time.perf_counter() - t0) / calls
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def peaks(device: torch.device) -> dict[str, float]:
    """Measured GFLOP/s of a large matrix multiply and a wide 3x3 convolution, fp32 and bf16."""
    out = {}
    n = 4096 if device.type == "cuda" else 1024
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
        out[f"matmul_{tag}"] = 2 * n ** 3 / timed(lambda: a @ b, device) / 1e9
        x = torch.rand(64, 64, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.rand(64, 64, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        flops = 2 * 64 * 64 * 9 * 64 * 30 * 30
        out[f"conv_{tag}"] = flops / timed(lambda: F.conv2d(x, w), device) / 1e9
    return out


def step_flops(model: torch.nn.Module, train: bool) -> float:
    """FLOPs of one image's attack step (forward + input gradient) or training step (forward + backward)."""
    x = torch.rand(8, 1, 32, 32, requires_grad=not train)
    y = torch.zeros(8, dtype=torch.long)
    for q in model.parameters():
        q.requires_grad_(train)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    for q in model.parameters():
        q.requires_grad_(True)
    return counter.get_total_flops() / 8


def _random_batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 1x32x32 images in [0, 1] and labels (speed does not depend on the pixels)."""
    torch.manual_seed(0)
    return torch.rand(n, 1, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)


def pgd_speed(device: torch.device) -> dict[str, float]:
    """PGD-40 image-steps/s at batch 256: fp32, torchattacks' PGD, the fast path (same model, batch)."""
    x, y = _random_batch(PGD_BATCH, device)
    res = {}
    for tag, exact in (("fp32", True), ("fast", False)):
        model = freeze(fast.prepare(SmallCNN().to(device).eval(), exact))
        atk = PGD(0.3, 0.01, 40, exact=exact)
        res[tag] = 40 * PGD_BATCH / timed(lambda: atk(model, x, y), device, min_seconds=4, warmup=1)
        if tag == "fp32":
            ref = torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True)
            res["torchattacks"] = 40 * PGD_BATCH / timed(lambda: ref(x, y), device, min_seconds=4, warmup=1)
    return res


def train_speed(device: torch.device) -> dict[str, float]:
    """Natural-training images/s at batch 128 (SGD step included): fp32 and the fast path."""
    x, y = _random_batch(TRAIN_BATCH, device)
    res = {}
    for tag, exact in (("fp32", True), ("fast", False)):
        model = fast.prepare(SmallCNN().to(device).train(), exact)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        res[tag] = TRAIN_BATCH / timed(lambda: natural_step(model, opt, x, y, exact), device, min_seconds=4)
    return res


def cifar_atta_speed(device: torch.device, steps: int = 12) -> dict[str, dict[str, float]]:
    """Table 3's training loop on ``device``: milliseconds per ATTA-1 + TRADES step (the package's ``train_atta``
    at the default profile's CIFAR-10 schedule: batch 64, crops and flips, random 32x32 images) for each default
    CIFAR-10 architecture, with one thread and with every core, and the minutes a 38-epoch model (782 steps per
    epoch) takes at that speed. A step's time is the difference between an epoch of ``steps`` batches and one of
    2, over ``steps - 2``, after a warm-up epoch, so start-up and the epoch's end are not counted."""
    from .data import ImageSet
    from .training import train_atta

    sched = get_profile("default").atta["cifar10"]
    cores = fast.set_threads()
    threads = (1, cores) if device.type == "cpu" and cores > 1 else (cores,)

    def epoch_seconds(arch_kw: dict, n_steps: int) -> float:
        g = torch.Generator().manual_seed(0)
        n = sched.batch_size * n_steps
        train = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                         torch.randint(0, 10, (n,), generator=g), torch.arange(n), "random")
        model = build(arch_kw["arch"], pooling="max", **{k: v for k, v in arch_kw.items() if k != "arch"})
        t0 = time.perf_counter()
        train_atta(model.to(device), train, train.take(slice(0, 16)), epochs=1, lr=sched.lr, eps=sched.eps,
                   step_size=sched.step, beta=sched.beta, batch_size=sched.batch_size, augment=sched.augment,
                   device=device, progress=False)
        _sync(device)
        return time.perf_counter() - t0

    out = {}
    for arch, kw in get_profile("default").cifar_archs.items():
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            epoch_seconds(kw, 2)  # warm-up: the kernels for these shapes
            per_step = (epoch_seconds(kw, steps) - epoch_seconds(kw, 2)) / (steps - 2)
            out[f"{arch}, {n_threads} thread{'s' if n_threads > 1 else ''}"] = {
                "ms_per_step": round(per_step * 1000, 1), "minutes_per_model": round(per_step * 782 * 38 / 60, 1)}
    fast.set_threads()
    return out


class _DispatchFlops(TorchDispatchMode):
    """Counts FLOPs with torch's own formulas (``flop_registry``) at the dispatcher, below autograd, so
    double backward (the gradient penalty) is counted too."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func.overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


FACE_GAN_LAYER = "block3"  # a middle block of the CelebA VGG16


def _gan_setup(device: torch.device, exact: bool, layer: str = GAN_LAYER, dataset: str = "mnist"):
    """The classifier (frozen, random weights: speed does not depend on them), a batch and fresh InterpretGAN
    nets at the default widths for ``layer``: the paper's MNIST model, or for ``dataset`` "celeba" the default
    profile's face VGG16 on 3 x 64 x 64 faces."""
    p = get_profile("default")
    if dataset == "celeba":
        settings, f = p.celeba.gan, p.celeba
        torch.manual_seed(0)
        model = build("face_vgg16", image_size=f.image_size, width=f.width, hidden=f.hidden)
        x = torch.rand(settings.batch_size, 3, f.image_size, f.image_size, device=device)
    else:
        settings, model = p.gan, SmallCNN()
        x, _ = _random_batch(settings.batch_size, device)
    model = freeze(fast.prepare(model.to(device).eval(), exact))
    x = fast.to_memory_format(x, exact)
    shape = tuple(gan.latent_of(model, x[:1], layer).shape[1:])
    return settings, model, x, gan.fit._build_nets(shape, x.shape[1], settings, device, exact)


def gan_step_flops(layer: str = GAN_LAYER, dataset: str = "mnist") -> float:
    """FLOPs per image of InterpretGAN's training step at full resolution (default widths, ``layer``), averaged
    over ``gp_every`` steps so that the lazy gradient penalty counts as often as it runs."""
    settings, model, x, nets = _gan_setup(torch.device("cpu"), True, layer, dataset)
    last = len(settings.channels) - 1
    with _DispatchFlops() as counter:  # FlopCounterMode's module hooks refuse the penalty's double backward
        for step in range(settings.gp_every):
            gan.train_step(nets, model, x, layer, last, 1.0, settings, step, exact=True)
    return counter.total / (settings.gp_every * len(x))


def gan_speed(device: torch.device, layer: str = GAN_LAYER, dataset: str = "mnist") -> dict[str, float]:
    """InterpretGAN training images/s at full resolution (MNIST's 32x32, where the default schedule spends 70%
    of its images; CelebA's 64x64 with ``dataset`` "celeba") for ``layer`` at the default widths and batch: plain
    fp32 and the fast path. One timed call is ``gp_every`` steps, so the lazy gradient penalty is included as
    often as it runs."""
    res = {}
    for tag, exact in (("fp32", True), ("fast", False)):
        settings, model, x, nets = _gan_setup(device, exact, layer, dataset)
        last = len(settings.channels) - 1

        def steps() -> None:
            for step in range(settings.gp_every):
                gan.train_step(nets, model, x, layer, last, 1.0, settings, step, exact)

        res[tag] = settings.gp_every * len(x) / timed(steps, device, min_seconds=6, warmup=1)
    return res


WIDGET_IMAGES = 200  # digits behind 05's live epsilon slider


def widget_step(device: torch.device, epsilon: float = 0.25) -> dict[str, float]:
    """05's epsilon slider at the default profile (shipped weights), natural and ATTA models, ``WIDGET_IMAGES``
    digits: ``compute`` is the seconds one new epsilon takes (PGD-40 and Acc_i at every layer, both models;
    the widget does this for each grid point when it is made), ``step`` the seconds a slider step then takes
    (a redraw of precomputed values)."""
    import matplotlib
    import matplotlib.pyplot as plt

    from .interactive import accuracy_vs_epsilon, epsilon_widget
    from .models import LAYERS

    matplotlib.use("Agg")
    test = mnist32("test").subset(get_profile("default").n_attack).take(slice(0, WIDGET_IMAGES))
    models, seconds = {}, {}
    for t in TRAININGS:
        model, info = zoo.classifier("default", training=t, device=device, progress=False)
        models[t] = (model, {l: zoo.explainer("default", training=t, layer=l, classifier_model=(model, info),
                                              progress=False)[0] for l in LAYERS})
        accuracy_vs_epsilon(*models[t], test.take(slice(0, 8)), [epsilon])  # warm up
        _sync(device)
        t0 = time.perf_counter()
        accuracy_vs_epsilon(*models[t], test, [epsilon])
        _sync(device)
        seconds[t] = round(time.perf_counter() - t0, 2)
    widget = epsilon_widget(models, test, 0.0, eps_max=0.05, eps_step=0.05, progress=False)
    t0 = time.perf_counter()
    widget.children[0].value = 0.05  # what releasing the slider at the next grid point does
    step = time.perf_counter() - t0
    plt.close("all")
    return {"images": WIDGET_IMAGES, "compute": round(sum(seconds.values()), 2), **seconds, "step": round(step, 2)}


def science(progress: bool = True) -> dict:
    """Fast path against fp32 at full scale, on the CPU: robust accuracy (PGD-40, FGSM, all 10,000 test
    digits) of the default natural max-pool model, and the test accuracy of that model trained both ways."""
    test = mnist32("test")
    models = {tag: zoo.classifier("default", pooling="max", exact=exact, device="cpu", progress=progress)
              for tag, exact in (("fast", False), ("fp32", True))}
    model = models["fast"][0]
    out = {"model": "default profile, natural, max pooling", "n_images": len(test),
           "trained_test_accuracy": {tag: info["test_accuracy"] for tag, (_, info) in models.items()},
           "trained_source": {tag: info["source"] for tag, (_, info) in models.items()}}
    # per attack, the smallest of these epsilons where it leaves 20-80% of the digits (probed on 1,000 first)
    probe = test.subset(1000, seed=1)
    attacks = {"pgd40": lambda e, ex: PGD(e, 0.01, 40, exact=ex), "fgsm": lambda e, ex: FGSM(e, exact=ex)}
    for name, make in attacks.items():
        eps = 0.1
        for e in (0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3):
            torch.manual_seed(0)
            if 0.2 <= run_attack(model, make(e, False), probe, progress=False).robust_accuracy <= 0.8:
                eps = e
                break
        out[f"{name}_epsilon"] = eps
        for tag, exact in (("fp32", True), ("fast", False)):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            r = run_attack(model, make(eps, exact), test, progress=progress, name=f"{name} {tag}, eps {eps:g}")
            out[f"{name}_{tag}"] = r.robust_accuracy
            out[f"{name}_{tag}_seconds"] = round(time.perf_counter() - t0, 1)
        out[f"{name}_difference_points"] = round(100 * (out[f"{name}_fast"] - out[f"{name}_fp32"]), 2)
    acc = out["trained_test_accuracy"]
    out["trained_difference_points"] = round(100 * (acc["fast"] - acc["fp32"]), 2)
    return out


GAN_SCIENCE_LAYER = "fc3"  # the cheapest layer to fit (its compression network is one FC layer)


def gan_science(progress: bool = True) -> dict:
    """Fast path against fp32 for InterpretGAN: the default profile's generator for ``GAN_SCIENCE_LAYER`` of the
    natural max-pool model fitted both ways (same seed; resumable, kept under ``<artifacts>/bench/``), and the
    share of 2,000 test digits whose explanation f labels right, each way."""
    settings = get_profile("default").gan
    test = mnist32("test").subset(2_000, seed=3)
    train = mnist32("train").subset(settings.n_train, seed=0)
    out = {"layer": GAN_SCIENCE_LAYER, "n_images": len(test), "images": list(settings.images)}
    for tag, exact in (("fast", False), ("fp32", True)):
        model, _ = zoo.classifier("default", pooling="max", exact=exact, device="cpu", progress=progress)
        folder = paths.artifacts_root() / "bench" / f"interpretgan-{GAN_SCIENCE_LAYER}-{tag}"
        final = folder / "explainer.safetensors"
        if final.is_file() and (done := cache.read_checkpoint(folder / "history.pt")) is not None:
            expl = gan.build_explainer(model, GAN_SCIENCE_LAYER, settings, cache.load_weights(final))
            seconds = done["seconds"][-1]
        else:
            expl, history = gan.fit_layer(model, GAN_SCIENCE_LAYER, train, settings, checkpoint=folder / "checkpoint.pt",
                                          progress=progress, exact=exact)
            cache.save_checkpoint(history, folder / "history.pt")
            cache.save_weights(gan.explainer_state(expl), final)
            seconds = history["seconds"][-1]
        out[f"accuracy_{tag}"] = gan.explanation_accuracy(model, expl, test, exact=exact)
        out[f"minutes_{tag}"] = round(seconds / 60, 2)
    out["difference_points"] = round(100 * (out["accuracy_fast"] - out["accuracy_fp32"]), 2)
    return out


def table(record: dict) -> str:
    """The bench record as a plain-text table."""
    lines = [f"machine: {record['machine']['cores']} cores, {record['machine']['cpu']}, torch {record['machine']['torch']}, "
             f"native bf16 {record['machine']['cpu_native_bf16']}, GPU {record['machine']['cuda'] or 'none'}"]
    for dev, r in record["devices"].items():
        pk, fl = r["peak_gflops"], r["flops_per_image_step"]
        lines += ["", f"== {dev} (fast path: {r['fast_path']['precision']}, {r['fast_path']['memory_format']})",
                  "measured peak GFLOP/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in pk.items()),
                  f"{'loop':<34}{'per second':>12}{'vs fp32':>9}{'vs torchattacks':>17}{'GFLOP/s':>10}{'of peak':>9}"]
        loops = [("pgd", "PGD-40", "image-steps", fl["attack"], "torchattacks"),
                 ("train", "training", "images", fl["train"], None)]
        if "gan_per_second" in r:
            loops.append(("gan", f"InterpretGAN {GAN_LAYER}", "images", fl["gan"], None))
        if "face_gan_per_second" in r:
            loops.append(("face_gan", f"face GAN {FACE_GAN_LAYER}", "images", fl["face_gan"], None))
        for loop, label, unit, flops, ref in loops:
            for tag, v in r[f"{loop}_per_second"].items():
                prec = "fp32" if tag != "fast" or "fp32" in r["fast_path"]["precision"] else "bf16"
                peak = max(pk[f"matmul_{prec}"], pk[f"conv_{prec}"])
                gf = v * flops / 1e9
                vs_ref = f"{v / r[f'{loop}_per_second'][ref]:.2f}x" if ref else ""
                lines.append(f"{label + ' ' + tag + ' (' + unit + ')':<34}"
                             f"{v:>12,.0f}{v / r[f'{loop}_per_second']['fp32']:>8.2f}x{vs_ref:>17}{gf:>10.1f}{gf / peak:>9.0%}")
        if "widget_step_seconds" in r:
            w = r["widget_step_seconds"]
            lines.append(f"05's epsilon slider ({w['images']} digits, natural and ATTA): a step {w['step']:.2f} s "
                         f"(target 5 s); computing one new epsilon {w['compute']:.1f} s (natural {w['natural']:.1f}, "
                         f"ATTA {w['atta']:.1f}), done for each grid point when the widget is made")
        if "cifar_atta" in r:
            lines.append("Table 3's ATTA-1 + TRADES step (CIFAR-10, batch 64, default profile): " + "; ".join(
                f"{k} {v['ms_per_step']:.0f} ms ({v['minutes_per_model']:.0f} min per 38-epoch model)"
                for k, v in r["cifar_atta"].items()))
    if "science" in record:
        s = record["science"]
        lines += ["", f"== science at full scale ({s['model']}, {s['n_images']:,} test digits)",
                  f"PGD-40 robust accuracy, eps {s['pgd40_epsilon']:g}: fp32 {s['pgd40_fp32']:.2%}, fast "
                  f"{s['pgd40_fast']:.2%} ({s['pgd40_difference_points']:+.2f} points)",
                  f"FGSM robust accuracy, eps {s['fgsm_epsilon']:g}:   fp32 {s['fgsm_fp32']:.2%}, fast "
                  f"{s['fgsm_fast']:.2%} ({s['fgsm_difference_points']:+.2f} points)",
                  f"trained test accuracy:  fp32 {s['trained_test_accuracy']['fp32']:.2%}, fast "
                  f"{s['trained_test_accuracy']['fast']:.2%} ({s['trained_difference_points']:+.2f} points)"]
    if "gan_science" in record:
        g = record["gan_science"]
        lines.append(f"InterpretGAN {g['layer']} explanation accuracy (f, {g['n_images']:,} digits): fp32 "
                     f"{g['accuracy_fp32']:.2%} ({g['minutes_fp32']:.1f} min fit), fast {g['accuracy_fast']:.2%} "
                     f"({g['minutes_fast']:.1f} min) ({g['difference_points']:+.2f} points)")
    if "parallel_layers" in record:
        r = record["parallel_layers"]
        lines += ["", f"== layers in parallel (08's LeNet-5, layers {r['layers']}, {r['gan_images']} images per scale)",
                  f"one process x {r['processes']} threads: {r['one_process']:.0f} s; {r['processes']} processes x "
                  f"1 thread (torchrun): {r['per_core']:.0f} s ({r['one_process'] / r['per_core']:.2f}x)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-science", action="store_true", help="speed only (no full-scale accuracy comparison)")
    ap.add_argument("--skip-parallel", action="store_true",
                    help="no timing of two layers fitted by one process against one process per core")
    args = ap.parse_args(argv)
    record = {"machine": fast.machine(), "devices": {}}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    model = SmallCNN()
    flops = {"attack": step_flops(model, train=False), "train": step_flops(model, train=True),
             "gan": gan_step_flops(), "face_gan": gan_step_flops(FACE_GAN_LAYER, "celeba")}
    for device in devices:
        print(f"measuring on {device} ...", flush=True)
        record["devices"][str(device)] = {
            "fast_path": fast.describe(device, exact=False), "peak_gflops": peaks(device),
            "flops_per_image_step": flops, "pgd_per_second": pgd_speed(device),
            "train_per_second": train_speed(device), "gan_per_second": gan_speed(device),
            "face_gan_per_second": gan_speed(device, FACE_GAN_LAYER, "celeba"),
            "widget_step_seconds": widget_step(device), "cifar_atta": cifar_atta_speed(device)}
    if not args.skip_science:
        record["science"] = science()
        record["gan_science"] = gan_science()
    if not args.skip_parallel:
        record["parallel_layers"] = parallel_layers()
    write_json(paths.artifacts_root() / "bench.json", record)
    print(table(record))
    print(f"\nwritten to {paths.artifacts_root() / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def parallel_layers(layers: str = "2,5", gan_images: str = "1000,2000,6000") -> dict[str, float]:
    """Wall seconds to fit ``layers`` of the example LeNet-5 (``08_your_model``'s default model, 28 px MNIST) with
    ``gan_images`` per scale, from an empty artifact folder each time: one process with every core as threads
    (``python -m interpretgan.diagnose``) against one process per core with one thread each (``torchrun
    --nproc_per_node <cores> -m interpretgan.diagnose``), the layers dealt to the processes by cost."""
    import subprocess
    import tempfile

    cores = fast.set_threads()
    args = ["-m", "interpretgan.diagnose", "--model", "notebooks/examples/lenet5.py:lenet5", "--weights",
            "weights/examples-lenet5-mnist.safetensors", "--layers", layers, "--gan-images", gan_images,
            "--n-images", "100", "--no-judges"]
    out = {"layers": layers, "gan_images": gan_images, "processes": cores}
    for name, cmd, threads in (("one_process", [sys.executable, *args], cores),
                               ("per_core", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                             str(cores), *args], 1)):
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "INTERPRETGAN_ARTIFACTS": folder, "OMP_NUM_THREADS": str(threads)}
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=paths.REPO_ROOT, check=True, capture_output=True)
            out[name] = time.perf_counter() - t0
    return out
