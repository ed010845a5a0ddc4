"""The fast path: mixed precision, memory format and threads for every loop of the package.

Who should use it: the loops in :mod:`interpretgan.attacks` and :mod:`interpretgan.training` (and
anything else that runs a model many times). A notebook only chooses ``exact``.

The package spends its time in two loops, the attack step (forward + input gradient) and the
training step. The fast path, on by default, runs them with

- mixed precision: ``torch.autocast`` in bfloat16 on CPUs with native bf16 arithmetic (AVX-512 BF16
  or AMX) and on CUDA GPUs that support it (else float16 on CUDA); weights, optimiser state,
  images and gradients with respect to the images stay float32, so every attack's projection and
  every optimiser step is done in fp32;
- channels-last memory format for 4-D activations (faster convolutions on CPU and tensor cores);
- all CPU cores as torch threads, and inference batch sizes chosen for the device.

``exact=True`` (or ``INTERPRETGAN_EXACT=1``) gives plain fp32 in the default memory format for
anyone who wants reference numbers. ``exact`` is part of every cache key, so fast and exact results
never mix. The science is the same either way: tests check robust and clean accuracy against fp32 at
small scale, and ``make bench`` reports the comparison at full scale.

Example::

    >>> model = fast.prepare(model, exact=False)          # channels-last on the fast path
    >>> with fast.autocast(x.device, exact=False):
    ...     logits = model(fast.to_memory_format(x, exact=False))
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from typing import Any

import torch
from torch import nn

EXACT_ENV = "INTERPRETGAN_EXACT"
_TRUE = ("1", "true", "yes", "on")


def default_exact() -> bool:
    """``exact`` when a caller gives none: True when ``$INTERPRETGAN_EXACT`` is 1/true/yes, else False."""
    return os.environ.get(EXACT_ENV, "").strip().lower() in _TRUE


def resolve_exact(exact: bool | None) -> bool:
    """``exact`` itself, or the environment's default when it is None."""
    return default_exact() if exact is None else bool(exact)


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated
    and slower than fp32, so the fast path stays in fp32 there."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:  # not Linux: ask torch what it would dispatch to
        return "AMX" in torch.backends.cpu.get_cpu_capability().upper()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast_dtype(device: str | torch.device, exact: bool | None = None) -> torch.dtype | None:
    """The reduced precision the fast path uses on ``device``, or None for plain fp32."""
    if resolve_exact(exact):
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision(device: str | torch.device, exact: bool | None = None) -> str:
    """A short name of what runs on ``device``: "fp32", "bf16 autocast" or "fp16 autocast"."""
    dtype = autocast_dtype(device, exact)
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"


def autocast(device: str | torch.device, exact: bool | None = None) -> contextlib.AbstractContextManager:
    """A context running the forward (and so the backward) pass in the fast path's precision."""
    dtype = autocast_dtype(device, exact)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def to_memory_format(x: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
    """``x`` in channels-last layout on the fast path when it is 4-D (values unchanged), else ``x``."""
    if x.dim() == 4 and not resolve_exact(exact):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def prepare(model: nn.Module, exact: bool | None = None) -> nn.Module:
    """``model`` with its 4-D weights in channels-last layout on the fast path (in place; returned)."""
    if not resolve_exact(exact):
        model.to(memory_format=torch.channels_last)
    set_threads()
    return model


@functools.lru_cache(maxsize=None)
def set_threads() -> int:
    """Use every core this process may run on for torch's intra-op threads; returns the count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores


def inference_batch_size(device: str | torch.device, image_numel: int = 1024) -> int:
    """Batch size for evaluation and attacks: large on a GPU (fills it), moderate on a CPU (fits in
    cache: on the 2-core development machine PGD on the MNIST model runs 1.3x faster at 125 images than at
    250); ``image_numel`` is C*H*W of one image. Training keeps the paper's batch sizes."""
    if torch.device(device).type == "cuda":
        return max(256, 4_000_000 // image_numel)
    return max(64, 128_000 // image_numel)


def describe(device: str | torch.device, exact: bool | None = None) -> dict[str, Any]:
    """What the fast path does on ``device``: precision, memory format, threads."""
    return {"device": str(device), "exact": resolve_exact(exact), "precision": precision(device, exact),
            "memory_format": "contiguous" if resolve_exact(exact) else "channels_last",
            "threads": torch.get_num_threads()}


def where_it_ran(device: str | torch.device, exact: bool | None, threads: int) -> str:
    """Where a run happened, for a record: the GPU or CPU model, the fast path's precision and the threads, e.g.
    "Intel(R) Xeon(R) Processor, bf16 autocast, 1 thread" (``threads`` as counted before :func:`machine`, which
    sets them)."""
    where = machine()
    return (f"{where['cuda'] or where['cpu']}, {precision(device, exact)}, {threads} thread"
            f"{'s' if threads > 1 else ''}")


def machine() -> dict:
    """Cores, CPU model, torch version and GPU (if any) of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": set_threads(), "cpu": cpu, "cpu_native_bf16": cpu_has_native_bf16(),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
