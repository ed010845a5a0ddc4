"""Diagnose your own model from the command line, its layers fitted in parallel under ``torchrun``.

Who should use it: anyone with a network of their own and more than one device (GPUs, or CPU cores) who wants
its layer diagnosis (Acc_i / Vul_i, paper Section 5) without waiting for one InterpretGAN fit after another.
Each layer's explainer is independent of the others, so the layers are dealt to the processes, balanced by their
expected cost (the FLOPs of one training step, :func:`interpretgan.diagnosis.layer_costs`); each process fits its
layers on its device (``cuda:LOCAL_RANK`` with GPUs, else the CPU with its share of the cores) into the shared
artifact folder, each layer with its own seed (:func:`interpretgan.diagnosis.layer_seed`), so the explainers are
those of a one-process run; rank 0 then assembles the diagnosis and writes its table. The same command without
``torchrun`` runs in one process; ``08_your_model`` shows the same diagnosis with figures.

Example::

    torchrun --nproc_per_node 2 -m interpretgan.diagnose --model examples/lenet5.py:lenet5 \\
        --weights weights/examples-lenet5-mnist.safetensors --dataset mnist --image-size 28 --layers all
    python -m interpretgan.diagnose --model mypackage.nets:resnet --weights net.pt --dataset path/to/folder

The process group, devices and threads come from :func:`interpretgan.distributed.init`.
"""
from __future__ import annotations

import argparse
import os
import time

from .attacks import ATTACK_FORMS
from .diagnosis import diagnose_user_model, prepare_user_model, user_judges
from .profiles import PROFILES


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="[torchrun --nproc_per_node N] -m interpretgan.diagnose",
                                 description="The layer diagnosis of your own model, layers fitted in parallel.")
    ap.add_argument("--model", required=True, help="path/to/file.py:factory or package.module:factory")
    ap.add_argument("--weights", default=None, help="a safetensors or state-dict file (read with weights_only)")
    ap.add_argument("--dataset", default="mnist", help="mnist | cifar10 | celeba | a folder with train/ and test/")
    ap.add_argument("--image-size", type=int, default=None, help="the side the model takes (default: the dataset's)")
    ap.add_argument("--layers", default="all", help="'all' or comma-separated names from model.named_modules()")
    ap.add_argument("--attack", default="pgd40", help=f"one of {', '.join(ATTACK_FORMS)}")
    ap.add_argument("--epsilon", type=float, default=0.3)
    ap.add_argument("--n-images", type=int, default=500)
    ap.add_argument("--profile", default="default", choices=list(PROFILES))
    ap.add_argument("--gan-images", default=None,
                    help="images shown per scale, comma-separated (default: the profile's schedule for the side)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-judges", action="store_true", help="skip the panel (MNIST and CelebA have one)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--exact", action="store_true", help="plain fp32 instead of the fast path")
    ap.add_argument("--backend", default=None, help="gloo | nccl (default: nccl with GPUs, else gloo)")
    ap.add_argument("--out", default=None, help="where rank 0 writes the table (CSV; default: beside the explainers)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, device = 0, None
    if world > 1:
        import torch.distributed as dist

        from .distributed import init
        device = init(args.backend, timeout_minutes=24 * 60)  # a rank may wait for whole fits
        rank = dist.get_rank()
    t0 = time.perf_counter()
    try:
        run = prepare_user_model(args.model, args.weights, args.dataset, args.image_size,
                                 "all" if args.layers == "all" else args.layers.split(","), args.attack, args.epsilon,
                                 args.n_images, args.profile, args.data_root, args.seed, device,
                                 args.exact or None, gan_images=args.gan_images)
        judges = None if args.no_judges or rank else user_judges(args.profile, args.dataset, run.test.shape[-1],
                                                                args.data_root, exact=args.exact or None)
        d = diagnose_user_model(run, judges=judges, seed=args.seed, rank=rank, world=world, progress=rank == 0,
                                exact=args.exact or None)
        if rank == 0:
            out = args.out or run.folder / "diagnosis.csv"
            d.table.to_csv(out)
            print(d.table.round(3).to_string())
            print(f"clean accuracy {d.clean:.4f}, robust {d.robust:.4f}; {len(run.layers)} layers on {world} "
                  f"process(es) in {time.perf_counter() - t0:.0f} s; explainers in {run.folder}; table in {out}")
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
