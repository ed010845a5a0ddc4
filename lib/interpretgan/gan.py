"""InterpretGAN (paper Section 3): per-layer explanation generators.

Who should use it: ``03_fit_interpretgan`` and everything that explains a layer (``04``, ``05``). For a
classifier split at a layer, f = f_post o f_pre with latent l = f_pre(x), a compression network C and a
generator G produce the explanation x_hat = G(C(l)). A discriminator D makes x_hat follow the data
distribution, and the interpretability term L_I (equation 3) makes it carry what f uses to classify:

    min_{G, C} max_D  V(D, G) - lambda * L_I(G),   L_I = E_{y ~ f(x)} [log p_f(y | x_hat)]

so G's loss is its adversarial loss plus lambda times the cross-entropy between f's predicted
distribution on x and f's prediction on x_hat (L_I up to the constant H(y)). G's only input is C(l):
there is no noise vector.

The generator is a progressive GAN (Karras et al. 2018, the paper's ref [24]): 4 scales (4x4 ... 32x32) for
MNIST, 5 or 6 (to 64x64 or 128x128) for CelebA,
2 convolutions per scale joined by nearest upsampling, each new scale faded in; the discriminator
mirrors it with average-pool downsampling and a minibatch-standard-deviation feature. Progressive
GAN's recipe: WGAN-GP with the drift term, Adam (lr 0.001, betas (0, 0.99)), equalised learning rate,
pixel-wise normalisation, and an exponential moving average (EMA) of the generator's (and the
compression network's) weights, used for every explanation shown or scored.

Example::

    >>> expl = fit_layer(model, "conv2", train_set, GANSettings(), checkpoint="c.pt")
    >>> x_hat = expl(x)             # explanations in [0, 1], same shape as x
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image
from .progress import tqdm

from . import fast
from .attacks import predict
from .augment import check_policies, diff_augment
from .cache import atomic_path, read_checkpoint, save_checkpoint
from .data import to_float
from .models import eval_mode, freeze

RESOLUTIONS = (4, 8, 16, 32)  # MNIST's four scales; in general scale k is resolution(k) pixels square


def resolution(scale: int) -> int:
    """The side in pixels of progressive GAN's scale ``scale`` (0-based): 4 * 2**scale."""
    return 4 * 2 ** scale


# ----------------------------------------------------------------------------------------------
# Building blocks of progressive GAN
# ----------------------------------------------------------------------------------------------

class EqualizedConv2d(nn.Module):
    """Conv2d with the equalised learning rate: weights ~ N(0, 1), scaled by He's constant at run time."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int = 0, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale, self.padding = gain / math.sqrt(c_in * kernel * kernel), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear layer with the equalised learning rate."""

    def __init__(self, d_in: int, d_out: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.scale = gain / math.sqrt(d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit average square (progressive GAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MinibatchStd(nn.Module):
    """Append the mean standard deviation over groups of up to 4 samples as one more feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(n, 4)
        y = x.float().reshape(g, -1, c, h, w)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n / g,)
        feat = std.reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, feat.to(x.dtype)], dim=1)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class CompressionNet(nn.Module):
    """The compression network C (paper Table 4), built from a latent's shape.

    Convolutional latents (C x H x W): stages of 3x3 conv (padding 1) + LeakyReLU + 2x2 average pooling
    while the map is larger than ``min_side``, the first stage with max(64, 2C) channels and each
    next one doubling, then one FC layer to ``code_dim``. Vector latents (and small maps): one FC.
    For the paper's MNIST model this gives exactly Table 4: conv1 (32x30x30) -> conv 64, 128, 256 + FC;
    conv2 (32x14x14) -> conv 64, 128 + FC; conv3 (64x12x12) -> conv 128, 256 + FC; conv4 and fc1..3 -> FC.

    One addition to Table 4: the code is standardised per dimension over the batch (a BatchNorm without
    affine parameters; its running statistics at explanation time), so that like progressive GAN's noise
    vector the codes of different images stay spread out. Without it, C trained by Adam at lr 0.001
    collapses every image to one code within the first 20 steps and the critic never recovers (measured
    on the MNIST model's conv1: the explanations' std over images fell from 0.29 to 0.03 and stayed).

    With ``code_map`` the code is a ``code_dim`` x 4 x 4 map instead (paper Table 5, the CelebA model):
    convolutional latents go through stages of 3x3 conv + LeakyReLU + 2x2 average pooling until the map is
    4x4, each stage doubling the channels up to ``code_dim`` (a 4x4 latent gets one conv and no pooling; a
    smaller one is first upsampled to 4x4, nearest), and vector latents through one FC layer to
    ``code_dim * 16`` values shaped as the map. For the full-width VGG16 at 128 px this is Table 5
    exactly: block1 (64x64x64) -> conv 128, 256, 512, 512; block2 -> 256, 512, 512; block3 -> 512, 512;
    block4 -> 512; block5 (512x4x4) -> conv 512; fc1..3 -> FC. The map is standardised per channel.

    Shape: input (N, *latent_shape); output (N, code_dim), or (N, code_dim, 4, 4) with ``code_map``.
    """

    def __init__(self, latent_shape: tuple[int, ...], code_dim: int = 128, min_side: int = 5,
                 code_map: bool = False):
        super().__init__()
        self.latent_shape, self.code_map = tuple(latent_shape), code_map
        layers: list[nn.Module] = []
        self.stages: list[int] = []
        if code_map:
            self._build_map(code_dim)
            return
        if len(latent_shape) == 3:
            c_in, h, w = latent_shape
            c = max(64, 2 * c_in)
            while min(h, w) > min_side:
                layers += [nn.Conv2d(c_in, c, 3, padding=1), _act(), nn.AvgPool2d(2)]
                self.stages.append(c)
                c_in, h, w, c = c, h // 2, w // 2, 2 * c
            flat = c_in * h * w
        else:
            flat = int(np.prod(latent_shape))
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, code_dim))
        self.standardise = nn.BatchNorm1d(code_dim, affine=False)

    def _build_map(self, code_dim: int) -> None:
        """Table 5's networks: latent -> (code_dim, 4, 4)."""
        layers: list[nn.Module] = []
        self.pooled: list[bool] = []
        if len(self.latent_shape) == 3:
            c_in, side, _ = self.latent_shape
            self.upsampled = side < 4
            if side < 4:
                layers.append(nn.Upsample(size=(4, 4), mode="nearest"))
                side = 4
            if side == 4:
                layers += [nn.Conv2d(c_in, code_dim, 3, padding=1), _act()]
                self.stages.append(code_dim)
                self.pooled.append(False)
            while side > 4:  # the last stage (8x8 -> 4x4) gives code_dim channels
                c = code_dim if side == 8 else min(2 * c_in, code_dim)
                layers += [nn.Conv2d(c_in, c, 3, padding=1), _act(), nn.AvgPool2d(2)]
                self.stages.append(c)
                self.pooled.append(True)
                c_in, side = c, side // 2
        else:
            layers += [nn.Flatten(), nn.Linear(int(np.prod(self.latent_shape)), code_dim * 16),
                       nn.Unflatten(1, (code_dim, 4, 4))]
        self.net = nn.Sequential(*layers)
        self.standardise = nn.BatchNorm2d(code_dim, affine=False)

    def describe(self) -> str:
        """The architecture in Table 4's (or Table 5's) notation, e.g. ``3x3 Conv, 64 -> AvgPooling -> FC``."""
        if self.code_map:
            if not self.stages:
                return "FC"
            return " -> ".join((["Upsample to 4x4"] if self.upsampled else []) +
                               [f"3x3 Conv, {c}" + (" -> AvgPooling" if p else "") for c, p in zip(self.stages, self.pooled)])
        return " -> ".join([f"3x3 Conv, {c} -> AvgPooling" for c in self.stages] + ["FC"])

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.net(latent).float())


class Generator(nn.Module):
    """Progressive generator: code (N, code_dim) -> image (N, out_channels, r, r) in [-1, 1] units (linear
    output), r = 4 * 2**scale. ``channels[k]`` is the width at scale k (4x4, 8x8, 16x16, 32x32, ...).
    With ``code_map`` the code is a (N, code_dim, 4, 4) map (:class:`CompressionNet` with ``code_map``) and
    the first layer is a 3x3 convolution on it instead of the linear 4x4 "transposed convolution"."""

    def __init__(self, code_dim: int = 128, channels: tuple[int, ...] = (64, 64, 32, 32), out_channels: int = 1,
                 code_map: bool = False):
        super().__init__()
        c0 = channels[0]
        self.c0, self.code_map = c0, code_map
        self.norm_in = PixelNorm()
        if code_map:
            self.input = EqualizedConv2d(code_dim, c0, 3, padding=1)
        else:
            self.input = EqualizedLinear(code_dim, c0 * 16, gain=math.sqrt(2) / 4)  # the 4x4 "transposed conv"
        self.first = nn.Sequential(_act(), PixelNorm(), EqualizedConv2d(c0, c0, 3, padding=1), _act(), PixelNorm())
        self.blocks = nn.ModuleList()
        for k in range(1, len(channels)):
            self.blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                EqualizedConv2d(channels[k - 1], channels[k], 3, padding=1), _act(), PixelNorm(),
                EqualizedConv2d(channels[k], channels[k], 3, padding=1), _act(), PixelNorm()))
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, out_channels, 1, gain=1.0) for c in channels])

    @property
    def n_scales(self) -> int:
        return len(self.to_rgb)

    def forward(self, code: torch.Tensor, scale: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        scale = self.n_scales - 1 if scale is None else scale
        h = self.first(self.input(self.norm_in(code)).view(len(code), self.c0, 4, 4))  # (N, c0, 4, 4) either way
        prev = h
        for k in range(scale):
            prev, h = h, self.blocks[k](h)
        out = self.to_rgb[scale](h)
        if scale > 0 and alpha < 1.0:  # fade-in: blend with the previous scale's image, upsampled
            skip = F.interpolate(self.to_rgb[scale - 1](prev), scale_factor=2, mode="nearest")
            out = torch.lerp(skip, out, alpha)
        return out


class Discriminator(nn.Module):
    """Progressive critic mirroring :class:`Generator`: image (N, in_channels, r, r) -> score (N,)."""

    def __init__(self, channels: tuple[int, ...] = (64, 64, 32, 32), in_channels: int = 1):
        super().__init__()
        c0 = channels[0]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(in_channels, c, 1) for c in channels])
        self.act_rgb = nn.ModuleList([_act() for _ in channels])
        self.blocks = nn.ModuleList([nn.Identity()])  # scale 0 has no downsampling block
        for k in range(1, len(channels)):
            self.blocks.append(nn.Sequential(
                EqualizedConv2d(channels[k], channels[k], 3, padding=1), _act(),
                EqualizedConv2d(channels[k], channels[k - 1], 3, padding=1), _act(), nn.AvgPool2d(2)))
        self.final = nn.Sequential(MinibatchStd(), EqualizedConv2d(c0 + 1, c0, 3, padding=1), _act(), nn.Flatten(),
                                   EqualizedLinear(c0 * 16, c0), _act(), EqualizedLinear(c0, 1, gain=1.0))

    def forward(self, x: torch.Tensor, scale: int, alpha: float = 1.0) -> torch.Tensor:
        h = self.act_rgb[scale](self.from_rgb[scale](x))
        if scale > 0:
            h = self.blocks[scale](h)
            if alpha < 1.0:
                skip = self.act_rgb[scale - 1](self.from_rgb[scale - 1](F.avg_pool2d(x, 2)))
                h = torch.lerp(skip, h, alpha)
            for k in range(scale - 1, 0, -1):
                h = self.blocks[k](h)
        return self.final(h).squeeze(1)


# ----------------------------------------------------------------------------------------------
# Settings, the explainer, losses
# ----------------------------------------------------------------------------------------------

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

    #: fields added after explainers were first shipped: left out of :meth:`as_dict` (the cache key) at
    #: their default, so that the keys of earlier fits stay valid
    LATER_FIELDS = {"code_map": False, "augment": (), "balanced": False, "flip": False, "distill_images": 0,
                    "latent_match": 0.0}

    def __post_init__(self):
        object.__setattr__(self, "augment", check_policies(self.augment))  # a tuple of known names

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if not (k in self.LATER_FIELDS and v == self.LATER_FIELDS[k])}

    @property
    def image_size(self) -> int:
        """The side of the explanations in pixels: the last scale's resolution."""
        return resolution(len(self.channels) - 1)


def latent_of(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for images ``x``: ``model.forward_to`` when the model has it (stops early),
    else a forward hook on ``model.get_submodule(layer)`` (any nn.Module, nested names with dots)."""
    if hasattr(model, "forward_to"):
        return model.forward_to(x, layer)
    return _hooked(model, x, layer)[0]


def _hooked(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output (its first call) and the model's output for ``x``, from one forward pass with a hook."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"layer {layer!r} was not called in the forward pass")
    if len(seen) > 1:
        raise ValueError(f"layer {layer!r} ({type(model.get_submodule(layer)).__name__}) runs {len(seen)} times in "
                         f"one forward pass (a shared module): its latent is ambiguous. Explain a module that runs "
                         f"once, e.g. give each use its own module object")
    return seen[0], out


class Explainer(nn.Module):
    """A fitted explanation generator for one layer: ``explainer(x)`` -> explanations in [0, 1] (full
    resolution, same shape as ``x``), computed by the EMA copies of C and G from f_pre(x).

    ``explain_latent(latent)`` does the same from a latent (e.g. one computed elsewhere). ``growing`` (a
    ``(scale, alpha)``; None, the default: the last scale) draws at a scale of the progressive generator,
    upsampled to full resolution: while a fit runs, its monitor and sample grids show the scale being
    trained, not the higher scales' untrained layers."""

    def __init__(self, classifier: nn.Module, layer: str, compression: CompressionNet, generator: Generator):
        super().__init__()
        self.layer, self.compression, self.generator = layer, compression, generator
        self.image_size = resolution(generator.n_scales - 1)
        self.growing: tuple[int, float] | None = None
        self._classifier = [classifier]  # not a submodule: its weights are not this explainer's

    @property
    def classifier(self) -> nn.Module:
        return self._classifier[0]

    @torch.no_grad()
    def explain_latent(self, latent: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
        scale, alpha = self.growing or (None, 1.0)
        with fast.autocast(latent.device, exact):
            out = self.generator(self.compression(latent), scale, alpha)
        return to_unit(out.float(), self.image_size)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
        with fast.autocast(x.device, exact):
            latent = latent_of(self.classifier, fast.to_memory_format(x, exact), self.layer)
        return self.explain_latent(latent.float(), exact)


def to_unit(images: torch.Tensor, size: int = 32) -> torch.Tensor:  # 32: MNIST's side
    """Generator output in [-1, 1] units at any resolution -> images in [0, 1] at ``size`` (nearest upsampling)."""
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="nearest")
    return ((images + 1) / 2).clamp(0.0, 1.0)


def interpretability_loss(classifier: nn.Module, x_hat_unit: torch.Tensor, target_probs: torch.Tensor,
                          exact: bool | None = None) -> torch.Tensor:
    """-L_I up to H(y): the cross-entropy between f's predicted distribution on x (``target_probs``) and f's
    prediction on the explanation (mean over the batch, fp32)."""
    with fast.autocast(x_hat_unit.device, exact):
        logits = classifier(fast.to_memory_format(x_hat_unit, exact))
    return _soft_label_cross_entropy(logits, target_probs)


def _soft_label_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_y p(y) log softmax(logits)_y, in fp32."""
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def latent_match_loss(classifier: nn.Module, x_hat_unit: torch.Tensor, layer: str, latent: torch.Tensor,
                      target_probs: torch.Tensor, exact: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Beyond the paper: how far ``layer`` sees the explanation from its input. Returns ``(match, loss_i)``:
    the mean squared difference between ``layer``'s latent of the explanation and ``latent`` (the input's),
    divided by the mean square of ``latent`` (so 1 means as far as a latent of zeros; scale-free across
    layers), and :func:`interpretability_loss`'s cross-entropy, from the same forward pass of f."""
    with fast.autocast(x_hat_unit.device, exact):
        seen, logits = latent_and_logits(classifier, fast.to_memory_format(x_hat_unit, exact), layer)
    match = (seen.float() - latent.float()).pow(2).mean() / latent.float().pow(2).mean().clamp_min(1e-12)
    return match, _soft_label_cross_entropy(logits, target_probs)


def gradient_penalty(D: Discriminator, real: torch.Tensor, fake: torch.Tensor, scale: int, alpha: float,
                     exact: bool | None = None) -> torch.Tensor:
    """WGAN-GP: mean of (||grad_x D(x_mix)|| - 1)^2 at random mixes of real and fake images (fp32)."""
    mix_w = torch.rand(len(real), 1, 1, 1, device=real.device)
    mix = torch.lerp(real, fake, mix_w).requires_grad_(True)
    with fast.autocast(real.device, exact):
        score = D(mix, scale, alpha).float().sum()
    (grad,) = torch.autograd.grad(score, [mix], create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).pow(2).mean()


def penalty_weight(settings: GANSettings, step: int) -> float:
    """The gradient penalty's weight at critic step ``step`` (0-based): ``gp_weight * gp_every`` on every
    ``gp_every``-th step, 0 (penalty not computed) on the others."""
    return settings.gp_weight * settings.gp_every if step % settings.gp_every == 0 else 0.0


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


# ----------------------------------------------------------------------------------------------
# Fitting one layer
# ----------------------------------------------------------------------------------------------

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
    C = CompressionNet(latent_shape, settings.code_dim, code_map=settings.code_map).to(device)
    G = Generator(settings.code_dim, settings.channels, channels_out, code_map=settings.code_map).to(device)
    D = Discriminator(settings.channels, channels_out).to(device)
    for m in (C, G, D):
        fast.prepare(m, exact)
    C_ema, G_ema = copy.deepcopy(C).eval(), copy.deepcopy(G).eval()
    freeze(C_ema)
    freeze(G_ema)
    opt_g = torch.optim.Adam([*C.parameters(), *G.parameters()], lr=settings.lr, betas=settings.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=settings.lr, betas=settings.betas)
    return _Nets(C, G, D, C_ema, G_ema, opt_g, opt_d)


def real_images(x: torch.Tensor, scale: int, alpha: float) -> torch.Tensor:
    """Images ``x`` in [0, 1] as the critic sees them at ``scale``: in [-1, 1], average-pooled to the scale's
    resolution and, while the scale fades in (``alpha`` < 1), blended with the previous resolution."""
    res = resolution(scale)
    real = x * 2 - 1
    if res < real.shape[-1]:
        real = F.avg_pool2d(real, real.shape[-1] // res)
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
                   latent: torch.Tensor | None = None) -> dict[str, float]:
    """One update of C and G from ``fake`` = G(C(l)) (with its graph) and f's predicted distribution on x
    (``target``): the adversarial loss -D(fake) (fake augmented by ``settings.augment``) plus lambda times the
    interpretability cross-entropy (plus ``settings.latent_match`` times :func:`latent_match_loss` against
    ``layer``'s ``latent`` of x, where set); or, for the inverter (``settings.pixel_loss``), the MSE to ``real``.
    Then the EMA copies follow. Returns ``loss_g`` and ``loss_i`` (or ``pixel``), and ``match`` where computed."""
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
        x_hat = to_unit(fake, settings.image_size)
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


def latent_and_logits(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s latent and the logits of images ``x``, from one forward pass (``forward_to`` then
    ``forward_from`` when the model has them, else a forward hook as in :func:`latent_of`)."""
    if hasattr(model, "forward_to") and hasattr(model, "forward_from"):
        latent = model.forward_to(x, layer)
        return latent, model.forward_from(latent, layer)
    return _hooked(model, x, layer)


def train_step(nets: _Nets, classifier: nn.Module, x: torch.Tensor, layer: str, scale: int, alpha: float,
               settings: GANSettings, step: int, exact: bool | None = None) -> dict[str, Any]:
    """One training step of InterpretGAN on images ``x`` (in [0, 1]): f once (``layer``'s latent and the
    predicted distribution), G(C(l)) once, then :func:`critic_step` (unless ``settings.pixel_loss``) and
    :func:`generator_step`. Returns ``scale``, ``alpha``, ``loss_d`` (WGAN critic loss without the
    penalty), ``gp`` (None when not computed), ``loss_g``, ``loss_i``, ``pixel`` (NaN where not computed)."""
    with torch.no_grad(), fast.autocast(x.device, exact):
        latent, logits = latent_and_logits(classifier, x, layer)
    target = F.softmax(logits.float(), dim=1)
    real = real_images(x, scale, alpha)
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
    rec.update(generator_step(nets, classifier, fake, target, real, scale, alpha, settings, exact, layer, latent))
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
    exact = fast.resolve_exact(exact)
    device = torch.device(device or next(classifier.parameters()).device)
    freeze(classifier.eval())
    x0 = to_float(train_set.images[:2], device)
    with torch.no_grad():
        latent_shape = tuple(latent_of(classifier, x0, layer).shape[1:])
    torch.manual_seed(seed)
    nets = _build_nets(latent_shape, train_set.shape[0], settings, device, exact)
    batch_at = _sampler(train_set, settings, seed)
    keys = ("images", "scale", "alpha", "loss_d", "loss_g", "loss_i", "gp", "pixel", "monitor_images",
            "monitor_accuracy", "seconds")
    history: dict[str, list] = {k: [] for k in keys}
    shown, elapsed, steps, last_gp = 0, 0.0, 0, float("nan")
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None:
        for name, mod in nets.modules().items():
            mod.load_state_dict(state[name])
        nets.opt_g.load_state_dict(state["opt_g"])
        nets.opt_d.load_state_dict(state["opt_d"])
        history, shown, elapsed, steps = state["history"], int(state["shown"]), float(state["seconds"]), state["steps"]
        last_gp = float(state.get("last_gp", float("nan")))
        torch.set_rng_state(state["rng"])
    total = sum(settings.images)
    n = len(train_set)
    monitor = monitor_set.take(slice(0, 32)) if monitor_set is not None else train_set.take(slice(0, 32))
    explainer = Explainer(classifier, layer, nets.C_ema, nets.G_ema)

    def write_checkpoint(final: bool = False) -> None:
        nonlocal last_write
        save_checkpoint({**{name: mod.state_dict() for name, mod in nets.modules().items()},
                         "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(), "history": history,
                         "shown": shown, "steps": steps, "last_gp": last_gp, "seconds": elapsed,
                         "rng": torch.get_rng_state(), "final": final}, checkpoint)
        last_write = time.monotonic()

    def save(final: bool = False) -> None:
        explainer.growing = phase_at(settings, shown)  # what the next step trains (the last scale at the end)
        try:
            if monitor_set is not None:
                history["monitor_images"].append(shown)
                history["monitor_accuracy"].append(explanation_accuracy(classifier, explainer, monitor_set,
                                                                        exact=exact))
            if samples_dir is not None:
                x_m, _ = monitor.tensors(device)
                save_grid(torch.cat([x_m, explainer(x_m, exact)]), Path(samples_dir) / f"images{shown:08d}.png")
        finally:
            explainer.growing = None
        if checkpoint is not None:
            write_checkpoint(final)

    last_write = time.monotonic()
    if prior is not None and state is None:
        t0 = time.perf_counter()
        history["distill_mse"] = warm_start(nets, classifier, layer, prior, train_set, settings, seed, device, exact)
        elapsed += time.perf_counter() - t0
        if checkpoint is not None:
            write_checkpoint()

    bar = tqdm(total=total, initial=shown, unit="img", desc=f"InterpretGAN {layer}", disable=not progress)
    stops = sorted(s for s in {s for _, _, s in _schedule(settings)} |
                   set(range(settings.checkpoint_every, total, settings.checkpoint_every)) if s > shown)
    while shown < total:
        t0 = time.perf_counter()
        idx, flips = batch_at(shown, steps)
        x = _flipped(to_float(train_set.images[idx], device), flips)
        x = fast.to_memory_format(x, exact)
        scale, alpha = phase_at(settings, shown)
        rec = train_step(nets, classifier, x, layer, scale, alpha, settings, steps, exact)
        if rec["gp"] is not None:
            last_gp = rec["gp"]
        # loss_d as plain WGAN-GP has it, with the latest penalty (lazy steps do not compute one)
        rec.update(loss_d=rec["loss_d"] + settings.gp_weight * last_gp, gp=last_gp)
        if not all(math.isfinite(v) for k, v in rec.items() if k in ("loss_d", "loss_g", "loss_i", "pixel")
                   and not math.isnan(v)):
            raise FloatingPointError(f"InterpretGAN loss diverged at {shown} images on layer {layer}: {rec}")
        shown += len(idx)
        steps += 1
        elapsed += time.perf_counter() - t0
        bar.update(len(idx))
        if steps % 20 == 0 or shown >= total:
            history["images"].append(shown)
            history["seconds"].append(elapsed)
            for k, v in rec.items():
                history.setdefault(k, []).append(v)  # "match" only where the latent-matching term is on
            bar.set_postfix(scale=f"{resolution(scale)}x{resolution(scale)}", alpha=f"{alpha:.2f}",
                            **({"pixel": f"{rec['pixel']:.3f}"} if settings.pixel_loss else
                               {"D": f"{rec['loss_d']:.2f}", "CE": f"{rec['loss_i']:.3f}"}))
        due = bool(stops) and shown >= stops[0]
        while stops and shown >= stops[0]:
            stops.pop(0)
        if due:  # the last image is always a scheduled stop (a scale's end)
            save(final=shown >= total)
        elif (checkpoint is not None and checkpoint_minutes is not None
              and time.monotonic() - last_write >= 60 * checkpoint_minutes):
            write_checkpoint()  # between the scheduled ones: weights only, no monitor or sample grid
    bar.close()
    return explainer, history


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
    if settings.code_dim != prior.generator.input.weight.shape[1] or prior.generator.n_scales != len(settings.channels):
        raise ValueError(f"prior for {prior.layer!r} does not fit these settings (code_dim, scales)")
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
        critic_step(nets, real_images(x, scale, 1.0), fake, scale, 1.0, settings, step, exact)
    return losses


@torch.no_grad()
def explanation_accuracy(judge: nn.Module, explainer: Explainer, test_set, batch_size: int = 250,
                         exact: bool | None = None, labels: torch.Tensor | None = None) -> float:
    """Fraction of ``test_set`` whose explanation ``judge`` assigns the true label (or ``labels``)."""
    device = next(explainer.parameters()).device
    labels = test_set.labels if labels is None else labels
    correct = 0
    for x, _, i in test_set.batches(batch_size, device=device):
        correct += int((predict(judge, explainer(x, exact), exact).cpu() == labels[i]).sum())
    return correct / len(test_set)


def explainer_state(explainer: Explainer) -> dict[str, torch.Tensor]:
    """The EMA weights of an explainer's C and G as one flat state dict (``compression.*``, ``generator.*``)."""
    return {f"{name}.{k}": v.detach().cpu().contiguous() for name in ("compression", "generator")
            for k, v in getattr(explainer, name).state_dict().items()}


def build_explainer(classifier: nn.Module, layer: str, settings: GANSettings, state: dict[str, torch.Tensor],
                    device: str | torch.device | None = None) -> Explainer:
    """An :class:`Explainer` for ``layer`` of ``classifier`` with the weights ``state`` (from :func:`explainer_state`)."""
    device = torch.device(device or next(classifier.parameters()).device)
    probe = torch.zeros(1, *state["generator.to_rgb.0.weight"].shape[:1], settings.image_size, settings.image_size,
                        device=device)
    with torch.no_grad(), eval_mode(classifier):
        latent_shape = tuple(latent_of(classifier, probe, layer).shape[1:])
    C = CompressionNet(latent_shape, settings.code_dim, code_map=settings.code_map)
    G = Generator(settings.code_dim, settings.channels, probe.shape[1], code_map=settings.code_map)
    for mod, name in ((C, "compression"), (G, "generator")):
        mod.load_state_dict({k[len(name) + 1:]: v.float() for k, v in state.items() if k.startswith(name + ".")})
    return Explainer(classifier, layer, C.to(device).eval(), G.to(device).eval())


@torch.no_grad()
def explain_layers(classifier: nn.Module, explainers: dict, x: torch.Tensor, exact: bool | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """For images ``x``: each layer's explanation (layer -> N x C x H x W in [0, 1], CPU) and the
    classifier's label for it (layer -> N labels, CPU)."""
    explained, labels = {}, {}
    for layer, expl in explainers.items():
        x_hat = expl(x, exact)
        explained[layer], labels[layer] = x_hat.cpu(), predict(classifier, x_hat, exact).cpu()
    return explained, labels
