"""Fitting one layer's InterpretGAN: the settings (:class:`GANSettings`, part of every cache key), the
progressive schedule, one critic and one generator step, and :func:`fit_layer`, the resumable loop that
returns an :class:`~interpretgan.gan.explainer.Explainer`; :func:`warm_start` starts a fit from a prior's
generator.

Who should use it: :mod:`interpretgan.zoo` (through the artifact cache) and anyone fitting a layer by hand.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image

from .. import fast
from ..augment import check_policies, diff_augment
from ..cache import atomic_path, read_checkpoint, save_checkpoint
from ..data import to_float
from ..models import freeze
from ..progress import tqdm
from .explainer import Explainer, explanation_accuracy, latent_and_logits, latent_of, to_unit
from .losses import gradient_penalty, interpretability_loss, latent_match_loss, penalty_weight
from .networks import CompressionNet, Discriminator, Generator, resolution, scales_for

@dataclass(frozen=True)
class GANSettings:
    """Everything that changes a fitted explanation generator (part of its cache key).

    ``images`` is the number of training images shown at each scale (4x4, 8x8, 16x16, 32x32); from the
    second scale on, the first half of them fades the new scale in. ``checkpoint_every`` images between
    checkpoints (an "epoch" of the fit: a killed run loses at most that much). ``gp_every`` > 1 is lazy
    regularisation (Karras et al. 2020, StyleGAN2): the gradient penalty is computed on every
    ``gp_every``-th critic step only, weighted by ``gp_every`` so that its average weight is unchanged; 1 is
    plain WGAN-GP. The penalty's double backward is about a third of a critic-and-generator step at 32x32.
    ``critic_steps`` critic updates precede each generator update (on the same batch; progressive GAN: 1).
    """

    code_dim: int = 128
    channels: tuple[int, ...] = (64, 64, 32, 32)
    images: tuple[int, ...] = (10_000, 10_000, 20_000, 40_000)
    batch_size: int = 64
    lr: float = 0.001
    betas: tuple[float, float] = (0.0, 0.99)
    gp_weight: float = 10.0            # WGAN-GP
    gp_every: int = 1                  # critic steps per gradient penalty (lazy regularisation; 1: every step)
    critic_steps: int = 1              # critic updates per generator update, on the same batch (WGAN-GP: 5)
    drift: float = 0.001               # progressive GAN's drift term on D(real)^2
    interpretability: float = 1.0      # lambda; 0 gives a plain GAN conditioned on C(l)
    ema: float = 0.999
    n_train: int | None = None         # training images (None: the whole split)
    checkpoint_every: int = 10_000
    pixel_loss: bool = False           # the baseline inverter (ref [21]): MSE to x only, no D, no L_I
    code_map: bool = False             # C's code is a code_dim x 4 x 4 map (Table 5, CelebA), not a vector
    augment: tuple[str, ...] = ()      # DiffAugment policies before the critic (:mod:`interpretgan.augment`)
    balanced: bool = False             # draw every class equally often (with replacement) instead of epochs
    flip: bool = False                 # flip each training image left-right with probability 1/2 (faces)
    distill_images: int = 0            # with a prior: images of C's warm-up towards the prior's codes
    latent_match: float = 0.0          # weight of the latent-matching term (:func:`latent_match_loss`; 0: off)
    base: int = 4                      # side of the first scale in pixels (:func:`scales_for`; 4: 32, 64, 128 px)

    #: fields added after explainers were first shipped: left out of :meth:`as_dict` (the cache key) at
    #: their default, so that the keys of earlier fits stay valid
    LATER_FIELDS = {"code_map": False, "augment": (), "balanced": False, "flip": False, "distill_images": 0,
                    "latent_match": 0.0, "base": 4}

    def __post_init__(self):
        object.__setattr__(self, "augment", check_policies(self.augment))  # a tuple of known names

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if not (k in self.LATER_FIELDS and v == self.LATER_FIELDS[k])}

    @property
    def image_size(self) -> int:
        """The side of the generator's images in pixels: the last scale's resolution."""
        return resolution(len(self.channels) - 1, self.base)

    def fits(self, side: int) -> bool:
        """Whether these settings draw images for a classifier that takes ``side`` pixels square."""
        return (self.base, len(self.channels)) == scales_for(side)

    def for_side(self, side: int) -> GANSettings:
        """These settings for images ``side`` pixels square (themselves when they fit): the scales of
        :func:`scales_for`, dropping the first scales' channels and images when there are fewer, repeating the
        first scale's when there are more (e.g. MNIST's (64, 64, 32, 32) at 32 px -> (64, 64, 32) at 28 px)."""
        if self.fits(side):
            return self
        base, n = scales_for(side)
        k = len(self.channels)
        channels = self.channels[k - n:] if n <= k else (self.channels[0],) * (n - k) + self.channels
        images = self.images[k - n:] if n <= k else (self.images[0],) * (n - k) + self.images
        return replace(self, base=base, channels=channels, images=images)


def _schedule(settings: GANSettings) -> list[tuple[int, int, int]]:
    """(scale, first image, last image) of each scale in the whole run's image count."""
    out, start = [], 0
    for scale, n in enumerate(settings.images):
        out.append((scale, start, start + n))
        start += n
    return out


def phase_at(settings: GANSettings, shown: int) -> tuple[int, float]:
    """(scale, fade-in alpha) after ``shown`` training images: alpha rises linearly from 0 to 1 over the
    first half of every scale but the first that shows images, then stays 1 (a schedule such as (0, 0, 0, n),
    a warm start from a prior's generator, trains the last scale at alpha 1 throughout)."""
    for scale, start, stop in _schedule(settings):
        if shown < stop:
            if start == 0:
                return scale, 1.0
            return scale, min(1.0, (shown - start) / max(1, (stop - start) / 2))
    return len(settings.images) - 1, 1.0


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s weights towards ``model``'s; buffers (the code's running statistics) are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid, atomically."""
    with atomic_path(Path(path)) as tmp:
        save_image(images.float().cpu(), str(tmp), nrow=nrow, padding=1, pad_value=1.0, format="png")


@dataclass
class _Nets:
    """The modules and optimisers of one fit: C, G (trained by ``opt_g``), the critic D (``opt_d``) and the
    EMA copies of C and G that explain."""

    C: CompressionNet
    G: Generator
    D: Discriminator
    C_ema: CompressionNet
    G_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer

    def modules(self) -> dict[str, nn.Module]:
        return {"C": self.C, "G": self.G, "D": self.D, "C_ema": self.C_ema, "G_ema": self.G_ema}


def _build_nets(latent_shape: tuple[int, ...], channels_out: int, settings: GANSettings, device: torch.device,
                exact: bool) -> _Nets:
    """Fresh C, G, D, their EMA copies and optimisers; channels-last on the fast path (1.6x on G and D at
    32x32 on the 2-core CPU, measured)."""
    C = CompressionNet(latent_shape, settings.code_dim, code_map=settings.code_map, map_side=settings.base).to(device)
    G = Generator(settings.code_dim, settings.channels, channels_out, code_map=settings.code_map,
                  base=settings.base).to(device)
    D = Discriminator(settings.channels, channels_out, base=settings.base).to(device)
    for m in (C, G, D):
        fast.prepare(m, exact)
    C_ema, G_ema = copy.deepcopy(C).eval(), copy.deepcopy(G).eval()
    freeze(C_ema)
    freeze(G_ema)
    opt_g = torch.optim.Adam([*C.parameters(), *G.parameters()], lr=settings.lr, betas=settings.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=settings.lr, betas=settings.betas)
    return _Nets(C, G, D, C_ema, G_ema, opt_g, opt_d)


def real_images(x: torch.Tensor, scale: int, alpha: float, base: int = 4) -> torch.Tensor:
    """Images ``x`` in [0, 1] as the critic sees them at ``scale``: in [-1, 1], average-pooled to the scale's
    resolution (resized, bilinear with antialiasing, where the side is not a multiple of it, e.g. 100 px against
    the 112 px of the last scale) and, while the scale fades in (``alpha`` < 1), blended with the previous
    resolution."""
    res = resolution(scale, base)
    real = x * 2 - 1
    if real.shape[-1] % res == 0 and res < real.shape[-1]:
        real = F.avg_pool2d(real, real.shape[-1] // res)
    elif real.shape[-1] != res:
        real = F.interpolate(real, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    if scale > 0 and alpha < 1.0:
        real = torch.lerp(F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest"), real, alpha)
    return real


def critic_step(nets: _Nets, real: torch.Tensor, fake: torch.Tensor, scale: int, alpha: float,
                settings: GANSettings, step: int, exact: bool | None = None) -> tuple[float, float | None]:
    """One update of the critic D on ``real`` and (detached) ``fake`` images: WGAN loss, progressive GAN's
    drift term and, on the steps :func:`penalty_weight` says, the gradient penalty, all on images augmented
    by ``settings.augment`` (real and fake alike). Returns the WGAN critic loss (without the penalty) and the
    penalty (None when not computed on this step)."""
    real, fake = diff_augment(real, settings.augment), diff_augment(fake.detach(), settings.augment)
    with fast.autocast(real.device, exact):
        d_real, d_fake = nets.D(real, scale, alpha).float(), nets.D(fake, scale, alpha).float()
    critic = d_fake.mean() - d_real.mean() + settings.drift * d_real.pow(2).mean()
    loss, gp = critic, None
    weight = penalty_weight(settings, step)
    if weight:
        gp = gradient_penalty(nets.D, real, fake, scale, alpha, exact)
        loss = critic + weight * gp
    nets.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_d.step()
    return critic.item(), (None if gp is None else gp.item())


def generator_step(nets: _Nets, classifier: nn.Module, fake: torch.Tensor, target: torch.Tensor,
                   real: torch.Tensor, scale: int, alpha: float, settings: GANSettings,
                   exact: bool | None = None, layer: str | None = None,
                   latent: torch.Tensor | None = None, side: int | None = None) -> dict[str, float]:
    """One update of C and G from ``fake`` = G(C(l)) (with its graph) and f's predicted distribution on x
    (``target``): the adversarial loss -D(fake) (fake augmented by ``settings.augment``) plus lambda times the
    interpretability cross-entropy (plus ``settings.latent_match`` times :func:`latent_match_loss` against
    ``layer``'s ``latent`` of x, where set); or, for the inverter (``settings.pixel_loss``), the MSE to ``real``.
    The classifier sees the explanation at ``side`` pixels (default: the generator's). Then the EMA copies
    follow. Returns ``loss_g`` and ``loss_i`` (or ``pixel``), and ``match`` where computed."""
    if settings.pixel_loss:
        loss = F.mse_loss(fake, real)
        rec = {"pixel": loss.item()}
    else:
        freeze(nets.D)
        try:
            with fast.autocast(fake.device, exact):
                adv = -nets.D(diff_augment(fake, settings.augment), scale, alpha).float().mean()
        finally:
            for q in nets.D.parameters():
                q.requires_grad_(True)
        x_hat = to_unit(fake, side or settings.image_size)
        if settings.latent_match:
            match, loss_i = latent_match_loss(classifier, x_hat, layer, latent, target, exact)
        else:
            match, loss_i = None, interpretability_loss(classifier, x_hat, target, exact)
        loss = adv + settings.interpretability * loss_i
        rec = {"loss_g": adv.item(), "loss_i": loss_i.item()}
        if match is not None:
            loss = loss + settings.latent_match * match
            rec["match"] = match.item()
    nets.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_g.step()
    _ema_update(nets.C_ema, nets.C, settings.ema)
    _ema_update(nets.G_ema, nets.G, settings.ema)
    return rec


def train_step(nets: _Nets, classifier: nn.Module, x: torch.Tensor, layer: str, scale: int, alpha: float,
               settings: GANSettings, step: int, exact: bool | None = None) -> dict[str, Any]:
    """One training step of InterpretGAN on images ``x`` (in [0, 1]): f once (``layer``'s latent and the
    predicted distribution), G(C(l)) once, then :func:`critic_step` (unless ``settings.pixel_loss``) and
    :func:`generator_step`. Returns ``scale``, ``alpha``, ``loss_d`` (WGAN critic loss without the
    penalty), ``gp`` (None when not computed), ``loss_g``, ``loss_i``, ``pixel`` (NaN where not computed)."""
    with torch.no_grad(), fast.autocast(x.device, exact):
        latent, logits = latent_and_logits(classifier, x, layer)
    target = F.softmax(logits.float(), dim=1)
    real = real_images(x, scale, alpha, settings.base)
    with fast.autocast(x.device, exact):
        fake = nets.G(nets.C(latent.float()), scale, alpha)
    fake = fake.float()
    rec: dict[str, Any] = {"scale": scale, "alpha": alpha, "loss_d": float("nan"), "gp": None,
                           "loss_g": float("nan"), "loss_i": float("nan"), "pixel": float("nan")}
    if not settings.pixel_loss:
        for k in range(settings.critic_steps):
            rec["loss_d"], gp = critic_step(nets, real, fake, scale, alpha, settings, step * settings.critic_steps + k,
                                            exact)
            rec["gp"] = gp if gp is not None else rec["gp"]
    rec.update(generator_step(nets, classifier, fake, target, real, scale, alpha, settings, exact, layer, latent,
                              x.shape[-1]))
    return rec


def fit_layer(classifier: nn.Module, layer: str, train_set, settings: GANSettings = GANSettings(), *,
              monitor_set=None, seed: int = 0, checkpoint: str | Path | None = None,
              samples_dir: str | Path | None = None, device: str | torch.device | None = None,
              progress: bool = True, exact: bool | None = None,
              checkpoint_minutes: float | None = 15.0, prior: Explainer | None = None
              ) -> tuple[Explainer, dict[str, Any]]:
    """Fit InterpretGAN's C and G (and the critic D) for ``layer`` of the frozen ``classifier``.

    Trains on ``train_set`` images (an ImageSet; the latents are computed on the fly by the frozen
    classifier), progressively over the scales of ``settings.images``: each step draws a batch, runs f
    once (latent and predicted distribution), G(C(l)) once, then :func:`critic_step` and
    :func:`generator_step`. With ``checkpoint``, writes the whole state atomically every
    ``settings.checkpoint_every`` images and at each scale's end, and also whenever ``checkpoint_minutes``
    of wall time have passed since the last write (None: never), so a slow machine loses at most that much;
    it resumes from it to the same weights as an uninterrupted fit. With ``samples_dir``, saves a PNG grid
    of EMA explanations of ``monitor_set``'s first 32 images, at the scale being trained, at every scheduled
    checkpoint. ``settings.pixel_loss`` fits the baseline inverter instead (MSE to x through the same C and
    G, no D, no L_I). ``settings.balanced`` draws each batch with every class equally likely (with replacement)
    instead of shuffled epochs; ``settings.flip`` flips each training image left-right with probability 1/2.

    ``prior`` (an :class:`Explainer` of the same generator widths, usually fitted longer on another layer) warm
    starts the fit: G and its EMA copy start from the prior's generator, and C, fresh, is first trained for
    ``settings.distill_images`` images to give the prior's code of each image (mean squared error between C's
    code of this layer's latent and the prior's code of its own layer's latent), then the fit runs as usual (with
    a schedule such as (0, 0, 0, n) it trains at full resolution only). D starts fresh and trains alone for as
    many images before G's first update (:func:`warm_start`).

    Returns the :class:`Explainer` (EMA weights) and the history: ``images`` (shown so far at each
    record), ``scale``, ``alpha``, ``loss_d``, ``loss_g`` (adversarial part), ``loss_i`` (the
    cross-entropy, i.e. -L_I + H(y)), ``gp``, ``pixel`` (inverter's MSE), ``monitor_accuracy``
    (fraction of ``monitor_set`` whose EMA explanation at the scale being trained f labels with the true
    label, at scheduled checkpoints), ``seconds``.
    """
    device = torch.device(device or next(classifier.parameters()).device)
    run = _FitRun(classifier, layer, train_set, settings, seed, device, fast.resolve_exact(exact), monitor_set,
                  checkpoint, samples_dir, checkpoint_minutes)
    if prior is not None and not run.resumed:
        t0 = time.perf_counter()
        run.history["distill_mse"] = warm_start(run.nets, classifier, layer, prior, train_set, settings, seed,
                                                run.device, run.exact)
        run.seconds += time.perf_counter() - t0
        run.write_checkpoint()
    total = sum(settings.images)
    bar = tqdm(total=total, initial=run.shown, unit="img", desc=f"InterpretGAN {layer}", disable=not progress)
    stops = sorted(s for s in {s for _, _, s in _schedule(settings)} |
                   set(range(settings.checkpoint_every, total, settings.checkpoint_every)) if s > run.shown)
    while run.shown < total:
        rec, shown_now = run.step()
        bar.update(shown_now)
        if run.steps % 20 == 0 or run.shown >= total:
            run.record(rec)
            res = resolution(rec["scale"], settings.base)
            bar.set_postfix(scale=f"{res}x{res}", alpha=f"{rec['alpha']:.2f}",
                            **({"pixel": f"{rec['pixel']:.3f}"} if settings.pixel_loss else
                               {"D": f"{rec['loss_d']:.2f}", "CE": f"{rec['loss_i']:.3f}"}))
        due = bool(stops) and run.shown >= stops[0]
        while stops and run.shown >= stops[0]:
            stops.pop(0)
        if due:  # the last image is always a scheduled stop (a scale's end)
            run.snapshot(final=run.shown >= total)
        elif run.checkpoint_overdue():
            run.write_checkpoint()  # between the scheduled ones: weights only, no monitor or sample grid
    bar.close()
    return run.explainer, run.history


_HISTORY_KEYS = ("images", "scale", "alpha", "loss_d", "loss_g", "loss_i", "gp", "pixel", "monitor_images",
                 "monitor_accuracy", "seconds")


class _FitRun:
    """One fit of :func:`fit_layer` in progress: its networks, where it stands (images ``shown``, ``steps``,
    ``seconds`` of fitting, the history, the latest gradient penalty) and its checkpoint, resumed from when one
    exists (``resumed``)."""

    def __init__(self, classifier: nn.Module, layer: str, train_set, settings: GANSettings, seed: int,
                 device: torch.device, exact: bool, monitor_set, checkpoint, samples_dir, checkpoint_minutes):
        self.classifier, self.layer, self.train_set, self.settings = freeze(classifier.eval()), layer, train_set, settings
        self.device, self.exact, self.monitor_set, self.checkpoint = device, exact, monitor_set, checkpoint
        self.samples_dir, self.checkpoint_minutes = samples_dir, checkpoint_minutes
        _, height, side = train_set.shape
        if height != side:
            raise ValueError(f"InterpretGAN explains square images; these are {height} x {side} pixels: crop or resize "
                             f"them to a square (and the classifier with them)")
        if not settings.fits(side):
            raise ValueError(f"these GANSettings draw {settings.image_size} px images (first scale {settings.base} px, "
                             f"{len(settings.channels)} scales) but the classifier takes {side} px: use "
                             f"settings.for_side({side})")
        with torch.no_grad():
            latent_shape = tuple(latent_of(classifier, to_float(train_set.images[:2], device), layer).shape[1:])
        torch.manual_seed(seed)
        self.nets = _build_nets(latent_shape, train_set.shape[0], settings, device, exact)
        self.batch_at = _sampler(train_set, settings, seed)
        self.history: dict[str, list] = {k: [] for k in _HISTORY_KEYS}
        self.shown, self.seconds, self.steps, self.last_gp = 0, 0.0, 0, float("nan")
        self.resumed = self._resume()
        self.monitor = (monitor_set if monitor_set is not None else train_set).take(slice(0, 32))
        self.explainer = Explainer(classifier, layer, self.nets.C_ema, self.nets.G_ema, image_size=side)
        self.last_write = time.monotonic()

    def _resume(self) -> bool:
        """Load the checkpoint when there is one (networks, optimisers, counters, RNG); returns whether it did."""
        state = read_checkpoint(self.checkpoint) if self.checkpoint is not None else None
        if state is None:
            return False
        for name, mod in self.nets.modules().items():
            mod.load_state_dict(state[name])
        self.nets.opt_g.load_state_dict(state["opt_g"])
        self.nets.opt_d.load_state_dict(state["opt_d"])
        self.history, self.shown, self.seconds = state["history"], int(state["shown"]), float(state["seconds"])
        self.steps, self.last_gp = state["steps"], float(state.get("last_gp", float("nan")))
        torch.set_rng_state(state["rng"])
        return True

    def step(self) -> tuple[dict[str, Any], int]:
        """One training step on the next batch; returns its record and the number of images it showed."""
        t0 = time.perf_counter()
        settings = self.settings
        idx, flips = self.batch_at(self.shown, self.steps)
        x = fast.to_memory_format(_flipped(to_float(self.train_set.images[idx], self.device), flips), self.exact)
        scale, alpha = phase_at(settings, self.shown)
        rec = train_step(self.nets, self.classifier, x, self.layer, scale, alpha, settings, self.steps, self.exact)
        if rec["gp"] is not None:
            self.last_gp = rec["gp"]
        # loss_d as plain WGAN-GP has it, with the latest penalty (lazy steps do not compute one)
        rec.update(loss_d=rec["loss_d"] + settings.gp_weight * self.last_gp, gp=self.last_gp)
        if not all(math.isfinite(v) for k, v in rec.items() if k in ("loss_d", "loss_g", "loss_i", "pixel")
                   and not math.isnan(v)):
            raise FloatingPointError(f"InterpretGAN loss diverged at {self.shown} images on layer {self.layer}: {rec}")
        self.shown += len(idx)
        self.steps += 1
        self.seconds += time.perf_counter() - t0
        return rec, len(idx)

    def record(self, rec: dict[str, Any]) -> None:
        """Append a step's record to the history (every 20 steps and the last)."""
        self.history["images"].append(self.shown)
        self.history["seconds"].append(self.seconds)
        for k, v in rec.items():
            self.history.setdefault(k, []).append(v)  # "match" only where the latent-matching term is on

    def write_checkpoint(self, final: bool = False) -> None:
        """The whole state, atomically (nothing without a checkpoint path)."""
        if self.checkpoint is None:
            return
        save_checkpoint({**{name: mod.state_dict() for name, mod in self.nets.modules().items()},
                         "opt_g": self.nets.opt_g.state_dict(), "opt_d": self.nets.opt_d.state_dict(),
                         "history": self.history, "shown": self.shown, "steps": self.steps, "last_gp": self.last_gp,
                         "seconds": self.seconds, "rng": torch.get_rng_state(), "final": final}, self.checkpoint)
        self.last_write = time.monotonic()

    def checkpoint_overdue(self) -> bool:
        """Whether ``checkpoint_minutes`` of wall time have passed since the last write."""
        return (self.checkpoint is not None and self.checkpoint_minutes is not None
                and time.monotonic() - self.last_write >= 60 * self.checkpoint_minutes)

    def snapshot(self, final: bool = False) -> None:
        """A scheduled stop: the monitor's accuracy, the sample grid (at the scale the next step trains; the
        last scale at the end) and the checkpoint."""
        self.explainer.growing = phase_at(self.settings, self.shown)
        try:
            if self.monitor_set is not None:
                self.history["monitor_images"].append(self.shown)
                self.history["monitor_accuracy"].append(explanation_accuracy(self.classifier, self.explainer,
                                                                             self.monitor_set, exact=self.exact))
            if self.samples_dir is not None:
                x_m, _ = self.monitor.tensors(self.device)
                save_grid(torch.cat([x_m, self.explainer(x_m, self.exact)]),
                          Path(self.samples_dir) / f"images{self.shown:08d}.png")
        finally:
            self.explainer.growing = None
        self.write_checkpoint(final)


def _sampler(train_set, settings: GANSettings, seed: int):
    """``batch_at(shown, steps)`` -> (indices of the next batch, which of them to flip or None): shuffled
    epochs of whole batches (the original fits), or with ``settings.balanced`` every class equally likely,
    drawn with replacement. A function of the step alone (seeded per epoch or per step), so a resumed fit
    draws the batches an uninterrupted one would."""
    n, b = len(train_set), settings.batch_size
    if settings.balanced:
        counts = torch.bincount(train_set.labels)
        weights = 1.0 / counts[train_set.labels].double()

    def batch_at(shown: int, steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if settings.balanced:
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * steps + 1)
            idx = torch.multinomial(weights, b, replacement=True, generator=g)
        else:
            usable = n - n % b  # whole batches only: every step shows batch_size images
            epoch = shown // usable
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            start = shown - epoch * usable
            idx = order[start:start + b]
        flips = None
        if settings.flip:
            flips = torch.rand(len(idx), generator=torch.Generator().manual_seed(seed * 999_983 + steps)) < 0.5
        return idx, flips

    return batch_at


def _flipped(x: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
    """``x`` with the images where ``flips`` is True mirrored left-right (``x`` itself when None)."""
    if flips is None or not bool(flips.any()):
        return x
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)


def warm_start(nets: _Nets, classifier: nn.Module, layer: str, prior: Explainer, train_set,
               settings: GANSettings, seed: int, device: torch.device, exact: bool | None = None) -> list[float]:
    """Start a fit from ``prior``: G and G_ema take the prior's generator weights; C learns, for
    ``settings.distill_images`` images (Adam, lr ``settings.lr``), to give each image the code the prior gives
    it (MSE between standardised codes), and C_ema copies it; then the fresh critic D trains alone for as many
    images against G(C(l)) at the last scale, so that G's first updates follow an informed critic. Returns
    C's MSE every 10 steps."""
    if (settings.code_dim != prior.generator.input.weight.shape[1] or prior.generator.n_scales != len(settings.channels)
            or prior.generator.base != settings.base):
        raise ValueError(f"prior for {prior.layer!r} does not fit these settings (code_dim, scales, first scale's side)")
    g_state = prior.generator.state_dict()
    nets.G.load_state_dict(g_state)
    nets.G_ema.load_state_dict(g_state)
    opt = torch.optim.Adam(nets.C.parameters(), lr=settings.lr)
    order = torch.Generator().manual_seed(seed * 1_000_003 + 424_242)
    steps = settings.distill_images // settings.batch_size

    def draw() -> torch.Tensor:  # a random batch of training images (the warm-up's own order)
        idx = torch.randint(len(train_set), (settings.batch_size,), generator=order)
        return fast.to_memory_format(to_float(train_set.images[idx], device), exact)

    losses = []
    for step in range(steps):
        x = draw()
        with torch.no_grad(), fast.autocast(device, exact):
            target = prior.compression(latent_of(prior.classifier, x, prior.layer).float()).float()
            latent = latent_of(classifier, x, layer).float()
        with fast.autocast(device, exact):
            loss = F.mse_loss(nets.C(latent).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            losses.append(loss.item())
    nets.C_ema.load_state_dict(nets.C.state_dict())
    scale = len(settings.channels) - 1
    for step in range(steps):  # the fresh critic learns G's images
        x = draw()
        with torch.no_grad(), fast.autocast(device, exact):
            fake = nets.G(nets.C(latent_of(classifier, x, layer).float()), scale, 1.0).float()
        critic_step(nets, real_images(x, scale, 1.0, settings.base), fake, scale, 1.0, settings, step, exact)
    return losses
