"""Training loops: natural training on the paper's schedule, resumable.

Who should use it: :mod:`interpretgan.zoo` (which adds the artifact cache and shipped weights);
call :func:`train_natural` directly to train a model of your own on an ImageSet.

Checkpoints are written atomically after every epoch (model, optimiser, RNG state, history), so a
killed run resumes from its last finished epoch and loses at most one epoch. Shuffling is seeded
per epoch, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import fast
from .attacks import accuracy
from .cache import load_checkpoint, save_checkpoint

LOSS_EVERY = 20  # record the mean training loss every this many steps


def set_seed(seed: int) -> None:
    """Seed torch's global generators (CPU and CUDA)."""
    torch.manual_seed(seed)


def learning_rate(epoch: int, lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """The step-schedule learning rate for 0-based ``epoch`` (multiplied by gamma after each milestone)."""
    return lr * gamma ** sum(epoch >= m for m in milestones)


def natural_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 exact: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the cross-entropy of ``model(x)``, forward and backward on the fast path unless
    ``exact``; returns the (detached) mean loss and the logits."""
    with fast.autocast(x.device, exact):
        logits = model(fast.to_memory_format(x, exact))
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


def train_natural(model: nn.Module, train_set, test_set, *, epochs: int, lr: float,
                  lr_milestones: tuple[int, ...] = (), lr_gamma: float = 0.1, momentum: float = 0.9,
                  weight_decay: float = 0.0, batch_size: int = 128, seed: int = 0,
                  checkpoint: str | Path | None = None, device: str | torch.device = "cpu",
                  progress: bool = True, exact: bool | None = None) -> dict[str, Any]:
    """Train ``model`` with SGD on cross-entropy; returns the history.

    The paper's batch size and schedule always; forward and backward on the fast path
    (:mod:`interpretgan.fast`: bf16 autocast, channels-last) unless ``exact`` (None: $INTERPRETGAN_EXACT).

    History (a dict of lists, one entry per epoch unless said): ``epoch``, ``lr``, ``train_loss``
    (mean over the epoch), ``train_accuracy`` and ``test_accuracy`` (fractions in [0, 1]),
    ``seconds`` (wall time of the epoch), and ``step``/``step_loss`` (mean loss every
    ``LOSS_EVERY`` steps). With ``checkpoint``, resumes from it when present.
    """
    exact = fast.resolve_exact(exact)
    fast.prepare(model.to(device), exact)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history: dict[str, list] = {k: [] for k in ("epoch", "lr", "train_loss", "train_accuracy",
                                                 "test_accuracy", "seconds", "step", "step_loss")}
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location="cpu")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = state["history"]
        torch.set_rng_state(state["rng"])
        start = int(state["epoch"])
    else:
        set_seed(seed)
    steps_per_epoch = train_set.n_batches(batch_size)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        rate = learning_rate(epoch, lr, lr_milestones, lr_gamma)
        for group in opt.param_groups:
            group["lr"] = rate
        model.train()
        shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
        total_loss, correct, seen, window = 0.0, 0, 0, []
        bar = tqdm(train_set.batches(batch_size, shuffle=True, generator=shuffle, device=device),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for k, (x, y, _) in enumerate(bar):
            loss, logits = natural_step(model, opt, x, y, exact)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at epoch {epoch + 1}, step {k}")
            total_loss += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            window.append(value)
            if len(window) == LOSS_EVERY or k == steps_per_epoch - 1:
                history["step"].append(epoch * steps_per_epoch + k + 1)
                history["step_loss"].append(sum(window) / len(window))
                bar.set_postfix(loss=f"{history['step_loss'][-1]:.3f}")
                window = []
        test_acc = accuracy(model, test_set, device=device, exact=exact)
        for key, value in (("epoch", epoch + 1), ("lr", rate), ("train_loss", total_loss / seen),
                           ("train_accuracy", correct / seen), ("test_accuracy", test_acc),
                           ("seconds", time.perf_counter() - t0)):
            history[key].append(value)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: lr {rate:g}, train loss {total_loss / seen:.4f}, "
                  f"test accuracy {test_acc:.4f} ({history['seconds'][-1]:.0f} s)")
        if checkpoint is not None:
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                             "rng": torch.get_rng_state(), "epoch": epoch + 1}, checkpoint)
    model.eval()
    return history
