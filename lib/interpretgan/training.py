"""Training loops: natural training on the paper's schedule, and adversarial training (ATTA-1 with
the TRADES loss), both resumable.

Who should use it: :mod:`interpretgan.zoo` (which adds the artifact cache and shipped weights);
call :func:`train_natural` or :func:`train_atta` directly to train a model of your own on an
ImageSet. :func:`train_atta` also runs under ``torchrun`` (DistributedDataParallel), see
:mod:`interpretgan.distributed`.

Checkpoints are written atomically after every epoch (model, optimiser, RNG state, history), so a
killed run resumes from its last finished epoch and loses at most one epoch. Shuffling is seeded
per epoch, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from .progress import tqdm

from . import fast
from .attacks import accuracy, input_grad, project, run_attack
from .cache import read_checkpoint, save_checkpoint
from .data import to_float

#: The trainings of the zoo: natural (:func:`train_natural`) and adversarial, ATTA-1 + TRADES (:func:`train_atta`).
TRAININGS = ("natural", "atta")
LOSS_EVERY = 20  # record the mean training loss every this many steps


def set_seed(seed: int) -> None:
    """Seed torch's global generators (CPU and CUDA)."""
    torch.manual_seed(seed)


def learning_rate(epoch: int, lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """The step-schedule learning rate for 0-based ``epoch`` (multiplied by gamma after each milestone)."""
    return lr * gamma ** sum(epoch >= m for m in milestones)


def _resume(checkpoint: str | Path | None, model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> dict | None:
    """Load a training checkpoint into ``model`` and ``opt`` and restore the RNG; returns the checkpoint
    (its ``epoch``, ``history``, ...) or, without one, seeds the RNG with ``seed`` and returns None."""
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    if state is None:
        set_seed(seed)
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state


def _record_loss(history: dict, window: list, value: float, step: int, last: bool, bar) -> list:
    """Add ``value`` to the running ``window``; every ``LOSS_EVERY`` steps (and at an epoch's ``last``
    step) record its mean as ``history["step_loss"]`` at ``step`` and show it on ``bar``. Returns the window."""
    window.append(value)
    if len(window) == LOSS_EVERY or last:
        history["step"].append(step)
        history["step_loss"].append(sum(window) / len(window))
        bar.set_postfix(loss=f"{history['step_loss'][-1]:.3f}")
        return []
    return window


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


#: Optimisers of :func:`train_natural`: SGD with momentum (MNIST, the paper's) and Adam (CelebA).
OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``) or ``adam`` (betas 0.9, 0.999) over ``params``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) mirrored left-right with probability 1/2 (the flips drawn on the CPU
    from ``generator``)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def train_natural(model: nn.Module, train_set, test_set, *, epochs: int, lr: float,
                  lr_milestones: tuple[int, ...] = (), lr_gamma: float = 0.1, momentum: float = 0.9,
                  weight_decay: float = 0.0, batch_size: int = 128, seed: int = 0, optimizer: str = "sgd",
                  flip: bool = False, checkpoint: str | Path | None = None, device: str | torch.device = "cpu",
                  progress: bool = True, exact: bool | None = None) -> dict[str, Any]:
    """Train ``model`` on cross-entropy with ``optimizer`` ("sgd" with ``momentum``, or "adam"); with ``flip``,
    every training image is mirrored left-right with probability 1/2 (faces); returns the history.

    The paper's batch size and schedule always; forward and backward on the fast path
    (:mod:`interpretgan.fast`: bf16 autocast, channels-last) unless ``exact`` (None: $INTERPRETGAN_EXACT).

    History (a dict of lists, one entry per epoch unless said): ``epoch``, ``lr``, ``train_loss``
    (mean over the epoch), ``train_accuracy`` and ``test_accuracy`` (fractions in [0, 1]),
    ``seconds`` (wall time of the epoch), and ``step``/``step_loss`` (mean loss every
    ``LOSS_EVERY`` steps). With ``checkpoint``, resumes from it when present.
    """
    exact = fast.resolve_exact(exact)
    fast.prepare(model.to(device), exact)
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    history: dict[str, list] = {k: [] for k in ("epoch", "lr", "train_loss", "train_accuracy",
                                                 "test_accuracy", "seconds", "step", "step_loss")}
    state = _resume(checkpoint, model, opt, seed)
    start = int(state["epoch"]) if state else 0
    history = state["history"] if state else history
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
            if flip:
                x = random_flip(x, shuffle)
            loss, logits = natural_step(model, opt, x, y, exact)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at epoch {epoch + 1}, step {k}")
            total_loss += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            window = _record_loss(history, window, value, epoch * steps_per_epoch + k + 1, k == steps_per_epoch - 1, bar)
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


# ----------------------------------------------------------------------------------------------
# Adversarial training: ATTA-1 with the TRADES loss
# ----------------------------------------------------------------------------------------------

def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                denominator: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The TRADES loss (Zhang et al. 2019): cross-entropy on the natural logits plus ``beta`` times
    KL(softmax(natural) || softmax(adversarial)), both summed over the batch and divided by
    ``denominator`` (default: the batch size, so the means). Gradients flow through both
    predictions, as in TRADES. Returns ``(loss, natural cross-entropy, KL)`` (fp32 scalars)."""
    denominator = float(denominator or max(len(y), 1))
    natural = F.cross_entropy(logits_nat.float(), y, reduction="sum") / denominator
    robust = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits_nat.float(), dim=1),
                      reduction="sum") / denominator
    return natural + beta * robust, natural, robust


class PerturbationBuffer:
    """ATTA's per-sample adversarial perturbations, carried from epoch to epoch.

    Holds ``delta = x_adv - x`` (fp32) for the samples this process owns: global index ``i`` with
    ``i % world == rank``, at slot ``i // world`` (one process: every sample). A fresh buffer is
    ``init_std * randn`` (ATTA's x + 0.001 * randn); the noise of sample ``i`` depends only on
    ``seed`` and ``i``, so any number of processes starts from the same buffer.
    """

    def __init__(self, n: int, shape: tuple[int, ...], seed: int = 0, rank: int = 0, world: int = 1,
                 init_std: float = 0.001, device: str | torch.device = "cpu"):
        self.n, self.shape, self.rank, self.world, self.init_std = n, tuple(shape), rank, world, init_std
        self.slots = -(-n // world)  # ceil: equal-size shards (the last ones padded) for gathering
        self.delta = torch.zeros(self.slots, *self.shape, device=device)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Back to fresh noise (ATTA's buffer reset), the same noise for the same ``seed``."""
        g = torch.Generator().manual_seed(10_007 * seed + 17)
        noise = torch.randn(self.n, *self.shape, generator=g) * self.init_std
        mine = noise[self.rank::self.world]
        self.delta.zero_()
        self.delta[:len(mine)] = mine.to(self.delta.device)

    def owned(self, indices: torch.Tensor) -> torch.Tensor:
        """A boolean mask of the global ``indices`` this process owns."""
        return indices % self.world == self.rank

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        return self.delta[(indices // self.world).to(self.delta.device)]

    def put(self, indices: torch.Tensor, delta: torch.Tensor) -> None:
        self.delta[(indices // self.world).to(self.delta.device)] = delta.detach().to(self.delta.device)

    def full(self) -> torch.Tensor | None:
        """Every process's entries as one (n, *shape) tensor in global order (on every process when
        distributed: an all-gather; on the CPU)."""
        parts = [self.delta.cpu()]
        if self.world > 1:
            parts = [torch.empty_like(self.delta) for _ in range(self.world)]
            dist.all_gather(parts, self.delta)
            parts = [p.cpu() for p in parts]
        out = torch.empty(self.n, *self.shape)
        for r, p in enumerate(parts):
            count = len(range(r, self.n, self.world))
            out[r::self.world] = p[:count]
        return out

    def load_full(self, full: torch.Tensor) -> None:
        """Take this process's entries from a (n, *shape) tensor in global order."""
        mine = full[self.rank::self.world]
        self.delta.zero_()
        self.delta[:len(mine)] = mine.to(self.delta.device)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random-crop-and-flip augmentation with given parameters: zero-pad ``x`` (N, C, H, W) by ``pad``,
    take the H x W window at ``offsets`` (N, 2: row, column in [0, 2*pad]) and mirror the rows with
    ``flips`` (N, bool). Returns (N, C, H, W)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # N, H
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # N, W
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(n, device=x.device)[:, None, None]
    return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def uncrop_flip(delta_aug: torch.Tensor, delta: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                pad: int = 4) -> torch.Tensor:
    """The inverse of :func:`crop_flip` for a perturbation (ATTA's inverse augmentation): writes the
    augmented ``delta_aug`` back into original coordinates over ``delta`` (pixels outside the crop keep
    their old value; values that fell on the padding are dropped). Returns the new (N, C, H, W)."""
    n, c, h, w = delta.shape
    padded = F.pad(delta, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=delta.device)
    cols = offsets[:, 1, None] + torch.arange(w, device=delta.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(n, device=delta.device)[:, None, None]
    padded[b, :, rows[:, :, None], cols[:, None, :]] = delta_aug.permute(0, 2, 3, 1)
    return padded[:, :, pad:pad + h, pad:pad + w].contiguous()


def atta_attack_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, eps: float,
                     step_size: float, exact: bool | None = None) -> torch.Tensor:
    """ATTA-1's attack: one cross-entropy sign-gradient step from ``x + delta`` (the sample's buffered
    perturbation), projected to the l_inf ball of radius ``eps`` and to [0, 1]. Returns the new
    perturbation (x_adv - x). Runs the model as it is (call it in eval mode)."""
    x_adv = (x + delta).clamp_(0.0, 1.0)
    grad = input_grad(model, x_adv, y, exact)
    return project(x_adv + step_size * grad.sign(), x, eps) - x


def at_buffer_reset(epoch: int, reset_every: int | None) -> bool:
    """Whether ATTA's perturbation buffer is reset before 0-based ``epoch`` (so a checkpoint written after ``epoch``
    finished epochs may drop its buffer): ``epoch`` is a positive multiple of ``reset_every``."""
    return bool(reset_every) and epoch > 0 and epoch % reset_every == 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum of ``values`` over all processes (themselves when not distributed)."""
    if rank_and_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _sharded_accuracy(model: nn.Module, test_set, device, exact, attack=None) -> float:
    """Clean (or, with ``attack``, robust) accuracy over ``test_set``, each process taking the images
    whose position is its rank modulo the world size and the counts summed."""
    rank, world = rank_and_world()
    part = test_set if world == 1 else test_set.take(slice(rank, None, world))
    if attack is None:
        correct = accuracy(model, part, device=device, exact=exact) * len(part)
    else:
        correct = run_attack(model, attack, part, device=device, progress=False).robust_accuracy * len(part)
    return _all_sum([correct], torch.device(device))[0] / len(test_set)


def train_atta(model: nn.Module, train_set, test_set, *, epochs: int, lr: float, eps: float, step_size: float,
               beta: float = 6.0, lr_milestones: tuple[int, ...] = (), lr_gamma: float = 0.1, momentum: float = 0.9,
               weight_decay: float = 0.0, batch_size: int = 128, reset_every: int | None = None,
               augment: bool = False, warmup_epochs: float = 0.0, seed: int = 0, eval_attack=None, eval_set=None,
               checkpoint: str | Path | None = None, device: str | torch.device = "cpu", progress: bool = True,
               exact: bool | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Adversarial training with ATTA-1 (Zheng et al. 2020) and the TRADES loss; returns the history.

    Each sample keeps its adversarial perturbation in a :class:`PerturbationBuffer` across epochs
    (fresh: 0.001 * randn; reset every ``reset_every`` epochs when given). Each batch takes one
    cross-entropy attack step of ``step_size`` from its buffered perturbation (model in eval mode),
    projected to ``eps``, stores it back, and the model takes an SGD step on the TRADES loss (``beta``)
    in train mode. With ``warmup_epochs``, the learning rate rises linearly step by step, from
    ``lr / (warmup_epochs * steps per epoch)`` to ``lr``, over the first ``warmup_epochs`` epochs (a
    deep network without residuals, e.g. VGG16, can diverge at lr 0.1 from its first step). With
    ``augment`` (CIFAR-10), images get a random 4-pixel-padded crop and a flip, and the perturbation
    goes through the same crop and flip and back (ATTA's inverse augmentation).

    Distributed: run under ``torchrun`` with a process group initialised (gloo on CPUs, nccl on GPUs);
    the model is wrapped in DistributedDataParallel; ``batch_size`` stays the global batch. Every
    process draws the same global batches and trains on the samples it owns (index modulo world
    size), whose perturbations it alone keeps; the loss is scaled so the averaged gradient is the
    single-process one. Only rank 0 writes the checkpoint (the buffer gathered from every rank).

    History (one entry per epoch unless said): ``epoch``, ``lr`` (the epoch's scheduled rate; a warm-up
    epoch rises to it), ``train_loss`` (TRADES),
    ``natural_loss``, ``robust_loss`` (the KL term), ``train_accuracy`` (natural) and
    ``train_robust_accuracy`` (on the buffered adversarial images), ``perturbation`` (mean l_inf size
    of the perturbations trained on), ``test_accuracy``, ``robust_accuracy`` (``eval_attack`` on
    ``eval_set``, when given; fractions in [0, 1]), ``seconds``, and ``step``/``step_loss``.
    With ``checkpoint``, resumes from it when present (at most one epoch lost). A checkpoint whose ``buffer`` is
    None resumes too when its epoch ends a ``reset_every`` period: the next epoch resets the buffer anyway, so the run
    is the uninterrupted one (a training stage carried between machines, :func:`interpretgan.cache.ship_stage`).
    ``on_epoch``, when given, is called on rank 0 after each epoch with the checkpoint's dict (``epoch``, ``model``,
    ``optimizer``, ``history``, ``rng``, ``buffer``).
    """
    exact = fast.resolve_exact(exact)
    device = torch.device(device)
    rank, world = rank_and_world()
    fast.prepare(model.to(device), exact)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    buffer = PerturbationBuffer(len(train_set), train_set.shape, seed=seed, rank=rank, world=world, device=device)
    keys = ("epoch", "lr", "train_loss", "natural_loss", "robust_loss", "train_accuracy", "train_robust_accuracy",
            "perturbation", "test_accuracy", "robust_accuracy", "seconds", "step", "step_loss")
    history: dict[str, list] = {k: [] for k in keys}
    state = _resume(checkpoint, model, opt, seed)
    start = int(state["epoch"]) if state else 0
    if state:
        history = state["history"]
        if state.get("buffer") is not None:
            buffer.load_full(state["buffer"])
        elif not at_buffer_reset(start, reset_every):
            raise ValueError(f"{checkpoint} holds no perturbation buffer and its epoch {start} does not end a "
                             f"reset_every={reset_every} period: the buffer it needs is lost; delete it to start over")
    n = len(train_set)
    steps_per_epoch = train_set.n_batches(batch_size)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        if at_buffer_reset(epoch, reset_every):
            buffer.reset(seed + epoch)
        rate = learning_rate(epoch, lr, lr_milestones, lr_gamma)
        for group in opt.param_groups:
            group["lr"] = rate
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        sums = torch.zeros(6, dtype=torch.float64)  # loss, natural, robust, correct, robust correct, l_inf
        window = []
        bar = tqdm(range(steps_per_epoch), desc=f"ATTA epoch {epoch + 1}/{epochs}", disable=not progress or rank > 0)
        warming = bool(warmup_epochs) and epoch < warmup_epochs
        for k in bar:
            if warming:
                for group in opt.param_groups:
                    group["lr"] = rate * min(1.0, (epoch * steps_per_epoch + k + 1) / (warmup_epochs * steps_per_epoch))
            batch = order[k * batch_size:(k + 1) * batch_size]
            if augment:
                offsets = torch.randint(0, 9, (len(batch), 2), generator=g)
                flips = torch.rand(len(batch), generator=g) < 0.5
            mine = buffer.owned(batch)
            idx = batch[mine]
            x = to_float(train_set.images[idx], device)
            y = train_set.labels[idx].to(device)
            delta = buffer.get(idx)
            if augment:
                off, flp = offsets[mine].to(device), flips[mine].to(device)
                x_in, d_in = crop_flip(x, off, flp), crop_flip(delta, off, flp)
            else:
                x_in, d_in = x, delta
            model.eval()
            d_new = atta_attack_step(model, x_in, y, d_in, eps, step_size, exact) if len(idx) else d_in
            buffer.put(idx, uncrop_flip(d_new, delta, off, flp) if augment else d_new)
            model.train()
            x_adv = (x_in + d_new).clamp_(0.0, 1.0)
            with fast.autocast(device, exact):
                logits_nat = net(fast.to_memory_format(x_in, exact))
                logits_adv = net(fast.to_memory_format(x_adv, exact))
            loss, natural, robust = trades_loss(logits_nat, logits_adv, y, beta, denominator=len(batch) / world)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            local = len(batch) / world  # the losses above are sums over this process's samples / local
            step_sums = torch.tensor([loss.item() * local, natural.item() * local, robust.item() * local,
                                      float((logits_nat.argmax(1) == y).sum()), float((logits_adv.argmax(1) == y).sum()),
                                      float(d_new.flatten(1).abs().amax(1).sum()) if len(idx) else 0.0],
                                     dtype=torch.float64)
            sums += step_sums
            value = step_sums[0].item() / max(len(idx), 1)
            if not math.isfinite(value):
                raise FloatingPointError(f"ATTA loss became {value} at epoch {epoch + 1}, step {k}")
            window = _record_loss(history, window, value, epoch * steps_per_epoch + k + 1, k == steps_per_epoch - 1, bar)
        totals = [v / n for v in _all_sum(sums.tolist(), device)]
        model.eval()
        test_acc = _sharded_accuracy(model, test_set, device, exact)
        robust_acc = (_sharded_accuracy(model, eval_set if eval_set is not None else test_set, device, exact, eval_attack)
                      if eval_attack is not None else float("nan"))
        for key, value in (("epoch", epoch + 1), ("lr", rate), ("train_loss", totals[0]), ("natural_loss", totals[1]),
                           ("robust_loss", totals[2]), ("train_accuracy", totals[3]),
                           ("train_robust_accuracy", totals[4]), ("perturbation", totals[5]),
                           ("test_accuracy", test_acc), ("robust_accuracy", robust_acc),
                           ("seconds", time.perf_counter() - t0)):
            history[key].append(value)
        if progress and rank == 0:
            warm = " (warm-up: rising to it)" if warming else ""
            print(f"ATTA epoch {epoch + 1}/{epochs}: lr {rate:g}{warm}, TRADES loss {totals[0]:.4f}, mean |delta|_inf "
                  f"{totals[5]:.3f}, test accuracy {test_acc:.4f}, robust accuracy {robust_acc:.4f} "
                  f"({history['seconds'][-1]:.0f} s)")
        keep = checkpoint is not None or on_epoch is not None
        full = buffer.full() if keep else None  # a collective: every rank takes part
        if keep and rank == 0:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                     "rng": torch.get_rng_state(), "epoch": epoch + 1, "buffer": full}
            if checkpoint is not None:
                save_checkpoint(state, checkpoint)
            if on_epoch is not None:
                on_epoch(state)
        if world > 1:
            dist.barrier()
    model.eval()
    return history
