"""Adversarial training on several devices: ``torchrun`` + DistributedDataParallel.

Who should use it: anyone with more than one GPU (or CPU node) who wants the ATTA models of the
pooling study faster. One process per device; each trains on its shard of every global batch (the
samples whose index modulo the world size is its rank) and alone keeps those samples' ATTA
perturbations; gradients are averaged by DistributedDataParallel so the result is the
single-process one (see :func:`interpretgan.training.train_atta`). Rank 0 writes the checkpoint
(resumable, the buffer gathered from every rank) and the finished model into the artifact cache,
where notebooks find it as usual (``source == "cache"``).

Example (two GPUs; on CPUs the backend is gloo)::

    torchrun --nproc_per_node 2 -m interpretgan.distributed --profile paper --pooling avg --seed 1
    torchrun --nproc_per_node 4 -m interpretgan.distributed --dataset cifar10 --arch wrn --profile paper

Models with batch norm (VGG16, WRN) normalise with each process's own batch statistics, as plain
DDP does, so for them the result is close to, not equal to, the single-process one.
"""
from __future__ import annotations

import argparse
import datetime
import os

import torch
import torch.distributed as dist

from . import fast
from .data import DATASETS
from .models import POOLINGS
from .profiles import PROFILES
from .zoo import classifier


def init(backend: str | None = None, timeout_minutes: float | None = None) -> torch.device:
    """Join the process group torchrun describes (env:// rendezvous); returns this process's device
    (cuda:LOCAL_RANK when GPUs are visible, else the CPU with cores shared among local processes).
    ``timeout_minutes``: how long a collective waits for the slowest process (torch's default, 30 min for
    gloo, when None; :mod:`interpretgan.diagnose` waits for whole InterpretGAN fits)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        timeout = {} if timeout_minutes is None else {"timeout": datetime.timedelta(minutes=timeout_minutes)}
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), **timeout)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    torch.set_num_threads(max(1, fast.set_threads() // local_world))
    return torch.device("cpu")


def atta_datasets() -> list[str]:
    """The datasets this command can train: those with an adversarial schedule (``Profile.atta``) in every profile,
    in :data:`interpretgan.data.DATASETS`' order (MNIST and CIFAR-10; not CelebA, whose model is natural only)."""
    return [d for d in DATASETS if all(d in p.atta for p in PROFILES.values())]


def _atta_dataset(value: str) -> str:
    """``--dataset``'s check: one of :func:`atta_datasets`, else an error saying why CelebA is not among them."""
    allowed = atta_datasets()
    if value not in allowed:
        why = " (the CelebA model is trained naturally only, as in the paper)" if value == "celeba" else ""
        raise argparse.ArgumentTypeError(f"{value!r} cannot be trained with ATTA here{why}; choose from "
                                         f"{', '.join(allowed)}")
    return value


def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(prog="torchrun ... -m interpretgan.distributed",
                                 description="ATTA-1 + TRADES training of one zoo model with DistributedDataParallel.")
    ap.add_argument("--profile", default="default", choices=list(PROFILES))
    ap.add_argument("--dataset", default="mnist", choices=atta_datasets(), type=_atta_dataset,
                    help="the datasets with an ATTA schedule in every profile (the CelebA model is trained naturally "
                         "only, as in the paper: 07_celeba trains it on one process)")
    ap.add_argument("--arch", default=None, help="cifar10 only: vgg16 | wrn")
    ap.add_argument("--pooling", default="max", choices=list(POOLINGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--exact", action="store_true", help="plain fp32 instead of the fast path")
    ap.add_argument("--backend", default=None, help="gloo | nccl (default: nccl with GPUs, else gloo)")
    args = ap.parse_args(argv)
    device = init(args.backend)
    try:
        model, info = classifier(profile=args.profile, pooling=args.pooling, training="atta", seed=args.seed,
                                 data_root=args.data_root, device=device, exact=args.exact or None,
                                 dataset=args.dataset, arch=args.arch, progress=dist.get_rank() == 0)
        if dist.get_rank() == 0:
            print(f"{info['source']}: {info['key']} test accuracy {info['test_accuracy']:.4f} "
                  f"({dist.get_world_size()} processes)")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
