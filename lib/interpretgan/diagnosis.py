"""The layer vulnerability diagnosis (paper Section 5, Table 1) and the max-pool index study.

Who should use it: ``05_diagnose`` and anyone diagnosing their own architecture. Given adversarial
images D* (attacked white-box against the model) and a fitted InterpretGAN explainer per layer:

- ``Acc_i`` is the accuracy, against the true labels, of the classifier f on the explanations of
  layer i for D*;
- ``Vul_i`` (equation 5): ``Vul_1 = 1 - Acc_1`` and ``Vul_i = Acc_{i-1} - Acc_i`` (it can be negative);
  so the ``Vul_i`` sum to ``1 - Acc_last``.

Two controls beside f's own reading. The *panel* (independent judges, ``zoo.judges()``) reads the same
explanations, so Acc_i does not rest on f alone. The *noise control* (which the paper lacks) repeats the
diagnosis on the same digits with uniform random-sign noise of the attack's epsilon: what a layer loses
under noise is the explainer's own fragility, and Vul_i(attack) - Vul_i(noise) is the attack's share.

Intervals are 95% bootstrap confidence intervals over images (scipy.stats.bootstrap; for ``Vul_i``
on the per-image difference, so the pairing of layers is kept).

The max-pool index study asks how often the argmax position of a max-pooling window changes between
a natural image and its adversarial version, from the pooling's own indices, also with tied windows
(several equal maxima, e.g. all zero after a ReLU) left out.

Example::

    >>> table = vulnerability(layer_correctness(model, explainers, x_adv, y))
    >>> table.loc["conv2", ["acc", "vul"]]
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import cache, gan, paths, quality, zoo
from .attacks import AttackResult, run_attack
from .data import load, mnist32
from .params import EXPLAINED_DATASETS
from .profiles import get_profile
from .models import as_found, eval_mode


def layer_correctness(model: nn.Module, explainers: dict, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 250, exact: bool | None = None) -> dict[str, torch.Tensor]:
    """For each layer (in ``explainers``' order): per-image booleans, whether f labels the explanation of
    that layer for ``images`` with the true label (the ingredients of Acc_i)."""
    reads = quality.read({"f": model}, quality.explain(explainers, images, exact, batch_size), exact)
    return {layer: pred == labels for layer, pred in reads["f"].items()}


def random_sign_noise(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """The noise control: ``x`` plus ``eps`` times independent uniform random signs per pixel, clipped to
    [0, 1] (the same l_inf size as the attack, no gradient)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1
    return (x + eps * signs.to(x.device)).clamp(0.0, 1.0)


def panel_correctness(reads: dict[str, dict[str, torch.Tensor]], labels: torch.Tensor,
                      judges: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per layer, per image: the share of ``judges`` (names in ``reads``, see :func:`quality.read`) that
    label the explanation with the true label (0..1; its mean over images is the panel's Acc_i)."""
    judges = list(judges)
    layers = reads[judges[0]]
    return {layer: torch.stack([(reads[j][layer] == labels).double() for j in judges]).mean(0) for layer in layers}


def attack_share(correct_attack: dict[str, torch.Tensor], correct_noise: dict[str, torch.Tensor],
                 confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The attack's own share of each layer's vulnerability: Vul_i under attack minus Vul_i under the noise
    control, on the same images (paired per image), with bootstrap intervals: columns ``share``,
    ``share_low``, ``share_high`` (fractions)."""
    rows, prev_a, prev_n = {}, None, None
    for layer, ca in correct_attack.items():
        a, n = ca.double().numpy(), correct_noise[layer].double().numpy()
        diff = ((np.ones_like(a) if prev_a is None else prev_a) - a) - ((np.ones_like(n) if prev_n is None else prev_n) - n)
        low, high = quality.mean_interval(diff, confidence, n_resamples, seed)
        rows[layer] = {"share": diff.mean(), "share_low": low, "share_high": high}
        prev_a, prev_n = a, n
    return pd.DataFrame(rows).T


def adversarial_class_share(reads: dict[str, dict[str, torch.Tensor]], labels: torch.Tensor,
                            adversarial_labels: torch.Tensor, judges: Iterable[str]) -> pd.DataFrame:
    """Over the images the attack fooled (f's label on x* differs from the true one): per layer, the share of
    explanations that f, each judge and the panel (mean over ``judges``) label with *the adversarial class*
    (f's label on x*), and the share f and the panel label with the true class. Where f reads the adversarial
    class and the panel does not, the explanation carries it as textures only f reads."""
    judges = list(judges)
    fooled = adversarial_labels != labels
    adv, true = adversarial_labels[fooled], labels[fooled]
    rows = {}
    for layer in reads["f"]:
        row = {name: float((reads[name][layer][fooled] == adv).double().mean()) for name in ["f", *judges]}
        row["panel"] = float(np.mean([row[j] for j in judges]))
        row["true class (f)"] = float((reads["f"][layer][fooled] == true).double().mean())
        row["true class (panel)"] = float(np.mean([(reads[j][layer][fooled] == true).double().mean() for j in judges]))
        rows[layer] = row
    out = pd.DataFrame(rows).T
    out.attrs["n_fooled"] = int(fooled.sum())
    return out


def vulnerability(correct: dict[str, torch.Tensor], confidence: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Table 1 from per-image correctness (layer -> bool tensor, in the model's order): one row per
    layer with ``acc`` (Acc_i), ``vul`` (Vul_i, equation 5), and bootstrap intervals ``acc_low``,
    ``acc_high``, ``vul_low``, ``vul_high`` (fractions; 95% by default)."""
    rows, prev = {}, None
    for layer, c in correct.items():
        c = c.double().numpy()
        diff = (np.ones_like(c) if prev is None else prev) - c
        acc_ci = quality.mean_interval(c, confidence, n_resamples, seed)
        vul_ci = quality.mean_interval(diff, confidence, n_resamples, seed)
        rows[layer] = {"acc": c.mean(), "acc_low": acc_ci[0], "acc_high": acc_ci[1],
                       "vul": diff.mean(), "vul_low": vul_ci[0], "vul_high": vul_ci[1]}
        prev = c
    return pd.DataFrame(rows).T


def vulnerable_layers(table: pd.DataFrame) -> list[str]:
    """Layers whose Vul_i interval lies above zero *and* whose Vul_i is above the mean Vul_i: the ones the
    diagnosis blames."""
    mean = table["vul"].mean()
    return [layer for layer, r in table.iterrows() if r["vul_low"] > 0 and r["vul"] > mean]


# ----------------------------------------------------------------------------------------------
# The max-pool index study
# ----------------------------------------------------------------------------------------------

def _pool_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every nn.MaxPool2d module of ``model`` for images ``x`` (name -> tensor), via hooks."""
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MaxPool2d):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _windows(t: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """Every pooling window's values, (N, C, out_h * out_w, k*k)."""
    k, s = pool.kernel_size, pool.stride
    k = k if isinstance(k, int) else k[0]
    s = s if isinstance(s, int) else s[0]
    n, c = t.shape[:2]
    cols = F.unfold(t.reshape(n * c, 1, *t.shape[2:]), kernel_size=k, stride=s)  # (N*C, k*k, L)
    return cols.transpose(1, 2).reshape(n, c, -1, k * k)


@torch.no_grad()
def maxpool_index_change(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 250
                         ) -> pd.DataFrame:
    """For each max-pooling module (in forward order): the fraction of pooling windows (over images,
    channels and positions) whose argmax position differs between ``x`` and ``x_adv``, taken from the
    pooling's own ``return_indices``; and the same fraction over the windows that are *not* tied in
    either input (a tied window has more than one position equal to its maximum, e.g. all zeros after a
    ReLU, where the argmax is an arbitrary choice). Columns: ``changed``, ``changed_low`` and ``changed_high``
    (its 95% bootstrap interval over images: every image has as many windows, so ``changed`` is the mean of the
    images' own fractions), ``changed_untied``, ``tied`` (fraction of windows tied in either input), ``windows``
    (count)."""
    for name, images in (("x", x), ("x_adv", x_adv)):
        if not images.is_floating_point():
            raise TypeError(f"{name} must hold float images in [0, 1] (ImageSet.tensors()), not {images.dtype}")
    device = next(iter(model.parameters()), x).device
    totals: dict[str, np.ndarray] = {}
    per_image: dict[str, list[np.ndarray]] = {}
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            nat = _pool_inputs(model, x[i:i + batch_size].to(device).float())
            adv = _pool_inputs(model, x_adv[i:i + batch_size].to(device).float())
            for name, a in nat.items():
                pool = model.get_submodule(name)
                _, idx_a = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        ceil_mode=pool.ceil_mode, return_indices=True)
                _, idx_b = F.max_pool2d(adv[name], pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        ceil_mode=pool.ceil_mode, return_indices=True)
                changed = (idx_a != idx_b).flatten()
                per_image.setdefault(name, []).append((idx_a != idx_b).flatten(1).double().mean(1).cpu().numpy())
                wa, wb = _windows(a, pool), _windows(adv[name], pool)
                tied = (((wa == wa.amax(-1, keepdim=True)).sum(-1) > 1) |
                        ((wb == wb.amax(-1, keepdim=True)).sum(-1) > 1)).flatten()
                if tied.numel() != changed.numel():  # padding or ceil mode: windows do not line up
                    tied = torch.zeros_like(changed)
                t = totals.setdefault(name, np.zeros(4))
                t += [changed.sum().item(), (changed & ~tied).sum().item(), tied.sum().item(), changed.numel()]
    rows = {}
    for name, (c, cu, ti, n) in totals.items():
        low, high = quality.mean_interval(np.concatenate(per_image[name]))
        rows[name] = {"changed": c / n, "changed_low": low, "changed_high": high, "changed_untied": cu / max(n - ti, 1),
                      "tied": ti / n, "windows": int(n)}
    return pd.DataFrame(rows).T


def sum_check(table: pd.DataFrame) -> float:
    """``sum(Vul_i) - (1 - Acc_last)``: zero up to rounding for any table from :func:`vulnerability`."""
    return float(table["vul"].sum() - (1 - table["acc"].iloc[-1]))


def order_layers(model: nn.Module, layers: Iterable[str], example: torch.Tensor) -> list[str]:
    """``layers`` (names as in ``model.named_modules()``, nested ones with dots) in the order a forward
    pass on ``example`` calls them; a name the model lacks, or one never called, raises ValueError
    naming the model's modules."""
    names = [n for n, _ in model.named_modules() if n]
    layers = list(dict.fromkeys(layers))
    bad = [l for l in layers if l not in names]
    if bad:
        raise ValueError(f"unknown layers {bad}; the model's modules are: {', '.join(names)}")
    calls: list[str] = []
    handles = [model.get_submodule(l).register_forward_hook(lambda m, i, o, l=l: calls.append(l)) for l in layers]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    missing = [l for l in layers if l not in calls]
    if missing:
        raise ValueError(f"layers {missing} are not called in the model's forward pass")
    return sorted(layers, key=calls.index)


# ----------------------------------------------------------------------------------------------
# Diagnose any model
# ----------------------------------------------------------------------------------------------

@dataclass
class Diagnosis:
    """What :func:`diagnose` returns.

    ``table``: Acc_i / Vul_i by f under attack with intervals (see :func:`vulnerability`); ``explainers``
    (layer -> :class:`~interpretgan.gan.Explainer`); ``clean`` and ``robust``: f's accuracy on the natural and
    attacked images; ``correct``: f's per-image flags per layer. With judges: ``panel`` (the same table read by
    the panel, :func:`panel_correctness`) and ``adversarial_class`` (:func:`adversarial_class_share`). With the
    noise control: ``noise`` (the table under :func:`random_sign_noise` of the attack's epsilon, read by f),
    ``noise_panel`` (read by the panel) and ``attack_share`` (:func:`attack_share`). ``model``, ``d_star``
    (the :class:`~interpretgan.attacks.AttackResult`, adversarial images included) and ``test`` (the natural
    images D* was made from) complete it."""

    table: pd.DataFrame
    explainers: dict
    clean: float
    robust: float
    correct: dict
    model: nn.Module
    d_star: AttackResult
    test: object
    panel: pd.DataFrame | None = None
    adversarial_class: pd.DataFrame | None = None
    noise: pd.DataFrame | None = None
    noise_panel: pd.DataFrame | None = None
    attack_share: pd.DataFrame | None = None


def _diagnosis(model: nn.Module, explainers: dict, d_star: AttackResult, test_set, judges: dict | None,
               noise_eps: float | None, seed: int, exact: bool | None) -> Diagnosis:
    """Read every layer's explanations of D* (and of the noise control) by f and the judges; build the tables."""
    judges = judges or {}
    readers = {"f": model, **judges}
    reads = quality.read(readers, quality.explain(explainers, d_star.x_adv, exact), exact)
    labels = d_star.labels
    correct = {layer: pred == labels for layer, pred in reads["f"].items()}
    d = Diagnosis(vulnerability(correct), explainers, d_star.clean_accuracy, d_star.robust_accuracy, correct,
                  model, d_star, test_set)
    if judges:
        d.panel = vulnerability(panel_correctness(reads, labels, judges))
        d.adversarial_class = adversarial_class_share(reads, labels, d_star.pred_adv, judges)
    if noise_eps is not None:
        noisy = random_sign_noise(test_set.tensors()[0], noise_eps, seed)
        noise_reads = quality.read(readers, quality.explain(explainers, noisy, exact), exact)
        noise_correct = {layer: pred == labels for layer, pred in noise_reads["f"].items()}
        d.noise = vulnerability(noise_correct)
        d.attack_share = attack_share(correct, noise_correct)
        if judges:
            d.noise_panel = vulnerability(panel_correctness(noise_reads, labels, judges))
    return d


def diagnose(model: nn.Module, layers: Iterable[str], attack, test_set, train_set, settings=None, *,
             folder=None, seed: int = 0, progress: bool = True, exact: bool | None = None,
             judges: dict | None = None, noise: bool = True) -> Diagnosis:
    """Diagnose any classifier: which of ``layers`` make it vulnerable to ``attack``.

    Arguments:
        model: any ``nn.Module`` mapping images in [0, 1] to logits; ``layers`` are names from
            ``model.named_modules()`` (nested ones with dots, e.g. ``"layer2.1"``), reached by forward
            hooks and put in forward order.
        attack: a callable ``attack(model, x, y) -> x_adv`` with an ``eps`` attribute (e.g.
            ``interpretgan.attacks.PGD(0.3)``).
        test_set, train_set: ImageSets; D* is ``test_set`` attacked white-box; generators fit on ``train_set``.
        settings: :class:`~interpretgan.gan.GANSettings` for every layer's InterpretGAN.
        folder: where each layer's generator is cached (``<layer>.safetensors``) and its fit checkpointed
            (resumable); None fits in memory only.
        judges: independent classifiers ``{name: model}`` that also read the explanations (the panel).
        noise: also run the noise control (random signs of size ``attack.eps`` on the same images).

    Returns a :class:`Diagnosis`; ``table`` has Acc_i, Vul_i and their 95% bootstrap intervals. ``model`` is
    given back as it was found (train/eval mode and ``requires_grad`` of every parameter); a layer that runs
    more than once in a forward pass (a shared module) is refused, naming it.

    Example::

        >>> d = diagnose(net, ["layer1", "layer2", "fc"], PGD(0.3), test.subset(2000), train)
        >>> d.table[["acc", "vul"]], d.attack_share
    """
    with as_found(model):  # the user's model leaves as it came: its modes and requires_grad flags
        return _diagnose(model, layers, attack, test_set, train_set, settings, folder, seed, progress, exact, judges,
                         noise)


def _diagnose(model, layers, attack, test_set, train_set, settings, folder, seed, progress, exact, judges, noise):
    settings = settings or gan.GANSettings()
    device = next(model.parameters()).device
    model.eval()
    x0 = test_set.take(slice(0, 2)).tensors(device)[0]
    layers = order_layers(model, layers, x0)
    result = run_attack(model, attack, test_set, device=device, keep_images=True, progress=progress, name="D*")
    explainers = fit_layers(model, layers, train_set, settings, folder, seed=seed, progress=progress, exact=exact)
    return _diagnosis(model, explainers, result, test_set, judges, attack.eps if noise else None, seed, exact)


def layer_seed(seed: int, layer: str) -> int:
    """The seed of ``layer``'s fit: a function of the run's ``seed`` and the layer's name only, so that a layer
    fits to the same weights whichever process fits it and whichever other layers are asked for."""
    return seed * 1_000_003 + zlib.crc32(layer.encode()) % 1_000_003


def layer_costs(model: nn.Module, layers: Iterable[str], settings, example: torch.Tensor) -> dict[str, float]:
    """The expected cost of each layer's fit: the floating-point operations of one InterpretGAN training step at
    full resolution on ``example`` (counted by torch's ``FlopCounterMode``: f's pass to the layer and through
    the explanation, C, G and the critic, forward and backward). Every step of a fit costs about the same, so
    the ratios are the ratios of whole fits."""
    from torch.utils.flop_counter import FlopCounterMode

    device, scale, costs = example.device, len(settings.channels) - 1, {}
    no_penalty = replace(settings, gp_every=2, critic_steps=1)
    state = torch.get_rng_state()
    try:
        for layer in layers:
            with torch.no_grad():
                shape = tuple(gan.latent_of(model, example, layer).shape[1:])
            nets = gan.fit._build_nets(shape, example.shape[1], settings, device, exact=True)
            counter = FlopCounterMode(display=False)
            with counter:  # a step without the gradient penalty (the counter cannot follow its double backward;
                # it is the critic's alone, the same for every layer)
                gan.train_step(nets, model, example, layer, scale, 1.0, no_penalty, 1, exact=True)
            costs[layer] = float(counter.get_total_flops())
    finally:
        torch.set_rng_state(state)  # counting leaves the fits' random streams as they were
    return costs


def assign_layers(costs: dict[str, float], world: int) -> list[list[str]]:
    """The layers of ``costs`` dealt to ``world`` processes, balanced by cost: the costliest first, each to the
    process with the least work so far (ties: the lowest rank). Returns each rank's layers in the given order."""
    loads, owner = [0.0] * world, {}
    for layer in sorted(costs, key=lambda l: -costs[l]):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owner[layer] = rank
        loads[rank] += costs[layer]
    return [[l for l in costs if owner[l] == r] for r in range(world)]


def fit_layers(model: nn.Module, layers: Iterable[str], train_set, settings, folder=None, *, seed: int = 0,
               rank: int = 0, world: int = 1, device=None, progress: bool = True, exact: bool | None = None,
               costs: dict[str, float] | None = None) -> dict:
    """Every layer's explainer (layer -> :class:`~interpretgan.gan.Explainer`): each ``folder/<layer>.safetensors``
    that exists is loaded, the others fitted (seed :func:`layer_seed`, checkpoint ``folder/<layer>.checkpoint.pt``)
    and saved there. With ``world`` > 1 processes (under ``torchrun``; ``folder`` shared by all), rank ``rank``
    fits only its share of the layers (:func:`assign_layers` on ``costs``, by default :func:`layer_costs`), all
    wait for each other, then every process loads every layer from ``folder``."""
    layers = list(layers)
    device = torch.device(device or next(model.parameters()).device)
    if world > 1 and folder is None:
        raise ValueError("fitting layers in several processes needs a folder they share (folder=...)")
    if world > 1:
        example = train_set.take(slice(0, 2)).tensors(device)[0]
        mine = assign_layers(costs or layer_costs(model, layers, settings, example), world)[rank]
    else:
        mine = layers
    side = train_set.shape[-1]
    explainers = {}
    for layer in layers:
        final = Path(folder) / f"{layer}.safetensors" if folder is not None else None
        state = cache.read_weights(final) if final is not None and final.is_file() else None
        if state is not None:  # fitted before (a damaged file is moved aside, and refitted below)
            explainers[layer] = gan.build_explainer(model, layer, settings, state, device, image_size=side)
            continue
        if layer not in mine:
            continue  # another process's layer: loaded after the barrier
        explainers[layer], _ = gan.fit_layer(model, layer, train_set, settings, seed=layer_seed(seed, layer),
                                             device=device, checkpoint=final.with_suffix(".checkpoint.pt") if final
                                             else None, progress=progress, exact=exact)
        if final is not None:
            cache.save_weights(gan.explainer_state(explainers[layer]), final)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    return {layer: explainers[layer] if layer in explainers else
            gan.build_explainer(model, layer, settings, cache.load_weights(Path(folder) / f"{layer}.safetensors"),
                                device, image_size=side)
            for layer in layers}


# ----------------------------------------------------------------------------------------------
# The paper's models: Table 1 through the artifact cache
# ----------------------------------------------------------------------------------------------

#: The paper's Table 1 (MNIST, PGD-40 at eps 0.3): Acc_i in percent, natural and adversarially trained.
PAPER_TABLE1_ACC = {"natural": {"conv1": 52.6, "conv2": 26.3, "conv3": 21.6, "conv4": 9.9, "fc1": 4.3, "fc2": 3.0,
                                "fc3": 3.5},
                    "atta": {"conv1": 95.1, "conv2": 94.0, "conv3": 93.9, "conv4": 92.6, "fc1": 90.1, "fc2": 90.0,
                             "fc3": 89.5}}
#: The paper's max-pool index study: % of argmax positions that change, first and second pooling layer.
PAPER_MAXPOOL_CHANGE = {"conv2": 40.9, "conv4": 18.1}


def paper_vulnerability(training: str) -> dict[str, float]:
    """Vul_i in percent from the paper's Acc_i (equation 5 applied to Table 1's accuracies)."""
    acc, out, prev = PAPER_TABLE1_ACC[training], {}, 100.0
    for layer, a in acc.items():
        out[layer] = round(prev - a, 1)
        prev = a
    return out


#: The paper's attack per dataset: PGD-40 at eps 0.3 on MNIST, PGD-20 at eps 2/255 on CelebA.
PAPER_ATTACK = {"mnist": ("pgd40", 0.3), "celeba": ("pgd20", 2 / 255)}


def diagnose_zoo_model(profile: str = "default", pooling: str = "max", training: str = "natural",
                       attack: str | None = None, epsilon: float | None = None, n_images: int | None = None,
                       seed: int = 0, data_root: str | None = None, progress: bool = True, exact: bool | None = None,
                       judges: bool = True, noise: bool = True, dataset: str = "mnist",
                       layers: Iterable[str] | None = None) -> Diagnosis:
    """:func:`diagnose` for the paper's model of these settings (MNIST, or ``dataset`` "celeba": the gender
    VGG16), everything through the artifact cache (classifier, D* = ``attack`` at ``epsilon`` on ``n_images``
    test images, by default the paper's attack for the dataset (:data:`PAPER_ATTACK`), one explainer per layer
    of ``layers`` (default all), fitted or shipped, and with ``judges`` the profile's panel,
    :func:`interpretgan.zoo.judges`)."""
    default_attack, default_eps = PAPER_ATTACK[dataset]
    attack, epsilon = attack or default_attack, default_eps if epsilon is None else epsilon
    model, info = zoo.classifier(profile, pooling=pooling, training=training, data_root=data_root, progress=progress,
                                 exact=exact, dataset=dataset)
    d_star = zoo.adversarial_set(model, info, attack, epsilon=epsilon, n_images=n_images, seed=seed,
                                 data_root=data_root, progress=progress)
    layers = list(model.layer_names) if layers is None else [l for l in model.layer_names if l in set(layers)]
    explainers = {layer: zoo.explainer(profile, pooling=pooling, training=training, layer=layer, data_root=data_root,
                                       progress=progress, exact=exact, classifier_model=(model, info),
                                       dataset=dataset)[0]
                  for layer in layers}
    panel = ({name: m for name, (m, _) in zoo.judges(profile, data_root=data_root, progress=progress,
                                                     exact=exact, dataset=dataset).items()}
             if judges else None)
    test = load(dataset, "test", data_root, size=zoo.image_size_of(info["settings"])).subset(n_images)
    return _diagnosis(model, explainers, d_star, test, panel, epsilon if noise else None, seed,
                      info["settings"]["exact"])


def adversarial_label_share(d: Diagnosis, confidence: float = 0.95, n_resamples: int = 2000,
                            seed: int = 0) -> pd.DataFrame:
    """The paper's "gradual, layer by layer" claim measured: over the images the attack fooled (f right on x,
    wrong on x*), per layer, the share of explanations of x* that f labels with the adversarial class (f's label
    on x*), with bootstrap intervals: columns ``share``, ``share_low``, ``share_high`` (fractions);
    ``attrs["n_fooled"]``."""
    fooled = (d.d_star.pred_clean == d.d_star.labels) & (d.d_star.pred_adv != d.d_star.labels)
    nothing = {layer: torch.empty(0, dtype=torch.long) for layer in d.explainers}  # none fooled: NaN rows
    reads = (quality.read({"f": d.model}, quality.explain(d.explainers, d.d_star.x_adv[fooled]))["f"]
             if bool(fooled.any()) else nothing)
    adv, rows, nan = d.d_star.pred_adv[fooled], {}, float("nan")
    for layer, pred in reads.items():
        hit = (pred == adv).double().numpy()
        low, high = quality.mean_interval(hit, confidence, n_resamples, seed) if len(hit) else (nan, nan)
        rows[layer] = {"share": float(hit.mean()) if len(hit) else nan, "share_low": low, "share_high": high}
    out = pd.DataFrame(rows).T
    out.attrs["n_fooled"] = int(fooled.sum())
    return out


# ----------------------------------------------------------------------------------------------
# Presenting diagnoses (05_diagnose): the library computes in fractions, these format in percent
# ----------------------------------------------------------------------------------------------

def _with_interval(table: pd.DataFrame, col: str, signed: bool = False, unit: str = "") -> pd.Series:
    """``col`` of a table with ``<col>_low`` / ``<col>_high`` as percent strings, e.g. ``12.3 [10.9, 13.8]``
    (``unit`` follows the value: ``12.3% [10.9, 13.8]``)."""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    t = table * 100
    return (t[col].map(fmt.format) + unit + " [" + t[f"{col}_low"].map(fmt.format) + ", "
            + t[f"{col}_high"].map(fmt.format) + "]")


def describe_share_curve(share: pd.DataFrame) -> str:
    """One paragraph on an :func:`adversarial_label_share` table (layers in forward order): where the share
    starts and ends, at how many steps between consecutive layers it rises (and at how many the 95% intervals
    do not overlap), the largest step, and the verdict: **gradual** when no single step makes up more than half
    of the rise from the first layer to the last, else **abrupt** at that step. Shares are fractions; the text
    says percent."""
    s = share.dropna(subset=["share"])
    if len(s) < 2:
        return "fewer than two layers with fooled images: no curve to describe."
    layers, v = list(s.index), s["share"].to_numpy(dtype=float)
    pct = _with_interval(s, "share", unit="%")
    steps = np.diff(v)
    rises = int((steps > 0).sum())
    clear = int((s["share_low"].to_numpy()[1:] > s["share_high"].to_numpy()[:-1]).sum())  # intervals apart
    k = int(np.argmax(steps))
    total = v[-1] - v[0]
    text = (f"The share of adversarial explanations f labels with the adversarial class goes from {pct[layers[0]]} "
            f"at {layers[0]} to {pct[layers[-1]]} at {layers[-1]}; it rises at {rises} of {len(steps)} steps "
            f"between consecutive layers ({clear} beyond the 95% intervals); the largest step is "
            f"{layers[k]} -> {layers[k + 1]} ({100 * steps[k]:+.1f} points). ")
    if total <= 0:
        return text + "It does not rise overall: no layer-by-layer takeover here."
    if steps[k] > total / 2:
        return text + (f"Abrupt rather than gradual: that one step makes up {steps[k] / total:.0%} of the rise "
                       f"from {layers[0]} to {layers[-1]}.")
    return text + (f"Gradual: no single step makes up more than half of the rise (the largest, "
                   f"{steps[k] / total:.0%}).")


def table1(d: Diagnosis, paper: str | None = None) -> pd.DataFrame:
    """Table 1 for one diagnosis in percent, 95% intervals in brackets: Acc_i and Vul_i read by f, Acc_i read
    by the panel (when judged), Acc_i and Vul_i under the noise control and the attack's share (when run),
    and with ``paper`` ("natural" | "atta") the paper's Acc_i and Vul_i."""
    out = pd.DataFrame({"Acc_i": _with_interval(d.table, "acc"), "Vul_i": _with_interval(d.table, "vul", True)})
    if d.panel is not None:
        out["Acc_i (panel)"] = _with_interval(d.panel, "acc")
    if d.noise is not None:
        out["Acc_i (noise)"] = (d.noise["acc"] * 100).map("{:.1f}".format)
        out["Vul_i (noise)"] = (d.noise["vul"] * 100).map("{:+.1f}".format)
        out["attack's share"] = _with_interval(d.attack_share, "share", True)
    if paper is not None:
        out["paper Acc_i"] = pd.Series(PAPER_TABLE1_ACC[paper]).map("{:.1f}".format)
        out["paper Vul_i"] = pd.Series(paper_vulnerability(paper)).map("{:+.1f}".format)
    return out


def maxpool_summary(diagnoses: dict[str, Diagnosis]) -> tuple[pd.DataFrame, dict]:
    """The max-pool index study of every diagnosed (max-pool) model: a table in percent (``changed``,
    ``changed_untied``, ``tied`` per pooling layer, with the paper's share beside ``changed``) and the values
    to glue, ``{training: {"conv2": ..., "conv4": ..., "conv2_untied": ..., "conv4_untied": ...}}`` (fractions)."""
    rows, glue = {}, {}
    for t, d in diagnoses.items():
        study = maxpool_index_change(d.model, d.test.tensors()[0], d.d_star.x_adv)
        study = study.set_axis(list(PAPER_MAXPOOL_CHANGE))  # the pooling after conv2, then after conv4
        glue[t] = {**{layer: round(float(study.loc[layer, "changed"]), 4) for layer in study.index},
                   **{f"{layer}_untied": round(float(study.loc[layer, "changed_untied"]), 4) for layer in study.index}}
        table = (study[["changed", "changed_untied", "tied"]] * 100).round(1)
        table["paper (natural)"] = pd.Series(PAPER_MAXPOOL_CHANGE)
        rows[t] = table
    return pd.concat(rows), glue


def compare_poolings(max_pool: dict[str, Diagnosis], avg_pool: dict[str, Diagnosis],
                     layers: tuple[str, ...] = ("conv2", "conv4")) -> tuple[pd.DataFrame, list[str]]:
    """The paper's argument tested: Vul_i of ``layers`` (those ending in a pooling) with max and with average
    pooling, per training (percent, with intervals), and one verdict line per training and layer."""
    rows, lines = {}, []
    for t in avg_pool:
        for pool, d in (("max", max_pool[t]), ("avg", avg_pool[t])):
            rows[(t, pool)] = (d.table.loc[list(layers), ["vul", "vul_low", "vul_high"]] * 100).round(1).stack()
        for layer in layers:
            mx, av = max_pool[t].table.loc[layer, "vul"] * 100, avg_pool[t].table.loc[layer, "vul"] * 100
            lines.append(f"{t}, {layer}: Vul max {mx:+.1f}%, avg {av:+.1f}% -> "
                         f"{'avg less vulnerable' if av < mx else 'avg not less vulnerable'}")
    return pd.DataFrame(rows).T, lines


def glue_values(diagnoses: dict[str, Diagnosis]) -> dict[str, dict]:
    """The numbers 05 glues, per training (fractions, rounded to 4 places): ``acc``, ``vul``, ``ci`` (the
    intervals of both), ``acc_panel``, ``acc_noise``, ``vul_noise``, ``attack_share`` and
    ``adversarial_class`` (share of explanations of fooled digits labelled with the adversarial class, by
    f and by the panel) where the diagnosis has them."""
    def col(table, name):
        return {layer: round(float(v), 4) for layer, v in table[name].items()}

    out: dict[str, dict] = {k: {} for k in ("acc", "vul", "ci", "acc_panel", "acc_noise", "vul_noise", "attack_share",
                                            "adversarial_class")}
    for t, d in diagnoses.items():
        out["acc"][t], out["vul"][t] = col(d.table, "acc"), col(d.table, "vul")
        out["ci"][t] = {layer: {"acc": [round(float(r["acc_low"]), 4), round(float(r["acc_high"]), 4)],
                                "vul": [round(float(r["vul_low"]), 4), round(float(r["vul_high"]), 4)]}
                        for layer, r in d.table.iterrows()}
        if d.panel is not None:
            out["acc_panel"][t] = col(d.panel, "acc")
            out["adversarial_class"][t] = {"f": col(d.adversarial_class, "f"),
                                           "panel": col(d.adversarial_class, "panel")}
        if d.noise is not None:
            out["acc_noise"][t], out["vul_noise"][t] = col(d.noise, "acc"), col(d.noise, "vul")
            out["attack_share"][t] = col(d.attack_share, "share")
    return {k: v for k, v in out.items() if v}


SCALING_LAYERS = ("conv1", "conv2")  # the layers of the scaling curve (natural max-pool model)


def shipped_scaling_budgets(profile: str = "default", training: str = "natural",
                            layers: tuple[str, ...] = SCALING_LAYERS, factors: tuple[int, ...] | None = None,
                            exact: bool | None = None) -> dict[str, tuple[int, ...]]:
    """Per layer of ``layers``, the budgets of the scaling curve (of ``factors``, default the profile's
    ``scaling_factors``) whose generator ships in ``weights/``: layer -> factors, those :func:`scaling_curve`
    fits nothing for."""
    factors = tuple(factors or get_profile(profile).scaling_factors)
    return {layer: tuple(k for k in factors
                         if cache.shipped(cache.settings_key(zoo.explainer_settings(
                             profile, "max", training, layer, exact=exact, schedule_factor=k, warm=False))) is not None)
            for layer in layers}


def scaling_fits_shipped(profile: str = "default", training: str = "natural",
                         layers: tuple[str, ...] = SCALING_LAYERS, factors: tuple[int, ...] | None = None,
                         exact: bool | None = None) -> bool:
    """Whether every generator of the scaling curve ships in ``weights/`` (so :func:`scaling_curve` fits nothing)."""
    factors = tuple(factors or get_profile(profile).scaling_factors)
    return all(got == factors for got in shipped_scaling_budgets(profile, training, layers, factors, exact).values())


def scaling_curve(profile: str = "default", training: str = "natural", layers: tuple[str, ...] = SCALING_LAYERS,
                  factors: tuple[int, ...] | dict[str, tuple[int, ...]] | None = None, attack: str = "pgd40",
                  epsilon: float = 0.3, n_images: int | None = None, data_root: str | None = None,
                  progress: bool = True, exact: bool | None = None) -> pd.DataFrame:
    """Where the paper's numbers come from: for ``layers`` of the max-pool ``training`` model, one generator per
    budget in ``factors`` (k times the profile's images per scale, fitted from nothing, ``warm=False``; through the cache: shipped, cached or
    fitted; a dict layer -> budgets, as :func:`shipped_scaling_budgets` returns, gives each layer its own),
    and per (layer, factor): ``images`` the generator saw, ``minutes`` its fit took, ``Acc_i`` (f)
    and ``Acc_i (panel)`` on D*, ``clean (f)`` and ``clean (panel)`` (explanations of the natural digits
    labelled right), ``class-mean share`` of the clean explanations, and the paper's Acc_i (fractions)."""
    factors = factors or get_profile(profile).scaling_factors
    budgets = factors if isinstance(factors, dict) else {layer: tuple(factors) for layer in layers}
    model, info = zoo.classifier(profile, pooling="max", training=training, data_root=data_root, progress=progress,
                                 exact=exact)
    d_star = zoo.adversarial_set(model, info, attack, epsilon=epsilon, n_images=n_images, data_root=data_root,
                                 progress=progress)
    panel = {name: m for name, (m, _) in zoo.judges(profile, data_root=data_root, progress=progress,
                                                    exact=exact).items()}
    natural = mnist32("test", data_root).subset(n_images).tensors()[0]
    labels, exact = d_star.labels, info["settings"]["exact"]
    rows = {}
    for layer, layer_factors in budgets.items():
        for k in layer_factors:
            expl, e_info = zoo.explainer(profile, pooling="max", training=training, layer=layer, data_root=data_root,
                                         progress=progress, exact=exact, classifier_model=(model, info),
                                         schedule_factor=k, warm=False)
            reads_adv = quality.read({"f": model, **panel}, quality.explain({layer: expl}, d_star.x_adv, exact), exact)
            clean = quality.explain({layer: expl}, natural, exact)
            reads_clean = quality.read({"f": model, **panel}, clean, exact)
            rows[(layer, k)] = {
                "images": e_info["history"]["images"][-1], "minutes": e_info["history"]["seconds"][-1] / 60,
                "Acc_i": float((reads_adv["f"][layer] == labels).double().mean()),
                "Acc_i (panel)": float(panel_correctness(reads_adv, labels, panel)[layer].mean()),
                "clean (f)": float((reads_clean["f"][layer] == labels).double().mean()),
                "clean (panel)": float(panel_correctness(reads_clean, labels, panel)[layer].mean()),
                "class-mean share": quality.class_mean_share(clean[layer], labels),
                "paper Acc_i": PAPER_TABLE1_ACC[training][layer] / 100}
    return pd.DataFrame(rows).T.rename_axis(["layer", "factor"])


def describe_adversarial_class(table: pd.DataFrame, margin: float = 0.2) -> str:
    """One sentence on an :func:`adversarial_class_share` table: the layers where f reads the adversarial class
    in at least ``margin`` more of the explanations than the panel does (there the explanation carries the
    adversarial class as textures that f reads and other classifiers do not), or that there are none."""
    gap = table["f"] - table["panel"]
    textures = [f"{layer} (f {100 * table.loc[layer, 'f']:.0f}%, panel {100 * table.loc[layer, 'panel']:.0f}%)"
                for layer in table.index if gap[layer] >= margin]
    if not textures:
        return (f"f and the panel agree within {100 * margin:.0f} points on every layer: where f reads the adversarial "
                f"class, the panel mostly reads it too, so the explanations draw it as a shape.")
    return (f"f reads the adversarial class far more often than the panel at {', '.join(textures)}: there the "
            f"explanation carries the adversarial class as textures f reads, not as a digit others recognise.")


# ----------------------------------------------------------------------------------------------
# Your own model: 08_your_model and python -m interpretgan.diagnose
# ----------------------------------------------------------------------------------------------

class _AtSide(nn.Module):
    """A judge trained on ``side``-pixel images reading images of another side (resized, bilinear)."""

    def __init__(self, judge: nn.Module, side: int):
        super().__init__()
        self.judge, self.side = judge, side

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.side:
            return x
        return F.interpolate(x, size=(self.side, self.side), mode="bilinear", antialias=True, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge(self._resized(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The judge's penultimate features (what Fréchet distances compare) of the resized images."""
        return self.judge.features(self._resized(x))


def user_gan_settings(profile: str, side: int):
    """The InterpretGAN settings for a user's model taking ``side``-pixel images: the profile's MNIST settings
    (``Profile.gan``) up to 32 px, its face settings (``celeba.gan``) above, fitted to the side
    (:meth:`~interpretgan.gan.GANSettings.for_side`)."""
    p = get_profile(profile)
    return (p.gan if side <= 32 else p.celeba.gan).for_side(side)


def user_judges(profile: str, dataset: str, side: int, data_root=None, progress: bool = True,
                exact: bool | None = None) -> dict | None:
    """The profile's panel for ``dataset`` (MNIST's four digit judges, CelebA's four face judges), each reading
    images of ``side`` pixels resized to its own side; None for other datasets (no panel is trained for them)."""
    if dataset not in EXPLAINED_DATASETS:  # the datasets with explainers are those with a panel
        return None
    own = 32 if dataset == "mnist" else get_profile(profile).celeba.image_size
    panel = zoo.judges(profile, data_root=data_root, progress=progress, exact=exact, dataset=dataset)
    return {name: _AtSide(m, own) if side != own else m for name, (m, _) in panel.items()}


@dataclass
class UserRun:
    """What :func:`prepare_user_model` sets up: the model (eval mode, on ``device``), its layers in forward order,
    the training images (for the generators) and ``n_images`` test images at the model's side, the number of
    classes, the GAN settings, the attack and the artifact folder of this model's explainers (keyed by the
    model file's and the weights' contents, the data, the side, the settings and the seed)."""

    model: nn.Module
    layers: list
    train: object
    test: object
    num_classes: int
    settings: object
    attack: object
    folder: Path
    device: torch.device


def prepare_user_model(model: str, weights=None, dataset: str = "mnist", image_size: int | None = None,
                       layers="all", attack: str = "pgd40", epsilon: float = 0.3, n_images: int = 500,
                       profile: str = "default", data_root=None, seed: int = 0, device=None,
                       exact: bool | None = None, gan_images=None) -> UserRun:
    """Load, check and set up a user's model for :func:`diagnose_user_model`; refuses (naming what is wrong) a
    model spec that does not import, a factory that returns no module, weights that do not match, a model that is
    not deterministic in eval mode or whose outputs are not logits of the dataset's classes, non-square images, a
    layer the model lacks or never calls (see :mod:`interpretgan.user_model`). ``gan_images`` (a sequence, or a
    comma-separated string, one count per scale) replaces the profile's schedule of images (:func:`user_gan_settings`)."""
    from . import user_model as um
    from .attacks import check_epsilon, make_attack

    net = um.load_model(model, weights).to(device or "cpu")
    device = next(net.parameters()).device
    train = um.images_for(dataset, "train", data_root, image_size)
    test = um.images_for(dataset, "test", data_root, image_size).subset(n_images)
    num_classes = um.NUM_CLASSES.get(dataset) or int(train.labels.max()) + 1
    um.check_model(net, test, num_classes)
    x0 = test.take(slice(0, 2)).tensors(device)[0]
    names = um.find_layers(net, x0) if layers in ("all", None) else order_layers(net, layers, x0)
    for layer in names:  # a shared module (called twice) is refused here, before any fit
        gan.latent_of(net, x0, layer)
    settings = user_gan_settings(profile, test.shape[-1])
    if gan_images is not None:
        counts = tuple(int(n) for n in (gan_images.split(",") if isinstance(gan_images, str) else gan_images))
        if len(counts) != len(settings.channels) or min(counts) < 0:
            raise ValueError(f"gan_images must give {len(settings.channels)} counts (one per scale of the "
                             f"{settings.image_size} px generator), got {gan_images!r}")
        settings = replace(settings, images=counts)
    step = None if dataset in um.NUM_CLASSES else epsilon / 4
    atk = make_attack(attack, check_epsilon(epsilon), dataset=dataset if dataset in um.NUM_CLASSES else "mnist",
                      alpha=step, exact=exact)
    spec_file = um.find_file(model.split(":")[0])
    key = cache.settings_key({"kind": "user-explainers", "model": model, "seed": seed, "dataset": str(dataset),
                              "side": test.shape[-1], "gan": settings.as_dict(), "n_train": settings.n_train,
                              "model_file": cache.sha256_file(spec_file) if spec_file.is_file() else None,
                              "weights": cache.sha256_file(um.find_file(weights)) if weights else None})
    train = train.subset(settings.n_train)
    return UserRun(net, names, train, test, num_classes, settings, atk,
                   paths.artifacts_root() / "user" / key, device)


def diagnose_user_model(run: UserRun, *, judges: dict | None = None, noise: bool = True, seed: int = 0,
                        rank: int = 0, world: int = 1, progress: bool = True, exact: bool | None = None):
    """:func:`diagnose` for a :class:`UserRun`, its explainers fitted (or loaded) in ``run.folder``, with
    ``world`` > 1 processes sharing the layers (:func:`fit_layers`); the :class:`Diagnosis` on rank 0, None on the
    others. ``judges`` (``{name: model}``) are read at their own side (resized)."""
    model, test = run.model, run.test
    result = run_attack(model, run.attack, test, device=run.device, keep_images=True, progress=progress and rank == 0,
                        name="D*")
    run.folder.mkdir(parents=True, exist_ok=True)
    explainers = fit_layers(model, run.layers, run.train, run.settings, run.folder, seed=seed, rank=rank,
                            world=world, device=run.device, progress=progress, exact=exact)
    if rank:
        return None
    return _diagnosis(model, explainers, result, test, judges, run.attack.eps if noise else None, seed, exact)


def describe_user_run(run: UserRun) -> pd.DataFrame:
    """One row per layer of a :class:`UserRun`: the module's type, its latent's shape, the compression network
    built for it (paper Table 4's notation) and the relative cost of its fit (:func:`layer_costs`, the cheapest
    layer 1.0)."""
    x0 = run.test.take(slice(0, 2)).tensors(run.device)[0]
    costs = layer_costs(run.model, run.layers, run.settings, x0)
    low = min(costs.values())
    rows = {}
    for layer in run.layers:
        with torch.no_grad():
            shape = tuple(gan.latent_of(run.model, x0, layer).shape[1:])
        rows[layer] = {"module": type(run.model.get_submodule(layer)).__name__, "latent": "x".join(map(str, shape)),
                       "compression network": gan.CompressionNet(shape, run.settings.code_dim,
                                                                 code_map=run.settings.code_map,
                                                                 map_side=run.settings.base).describe(),
                       "relative cost": round(costs[layer] / low, 2)}
    return pd.DataFrame(rows).T
