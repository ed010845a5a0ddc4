"""The networks of InterpretGAN: progressive GAN's generator G and critic D (Karras et al. 2018, the paper's
ref [24]) and the compression network C (paper Tables 4 and 5) that turns a layer's latent into G's code.

Who should read it: anyone changing an architecture. Fitting them is :mod:`interpretgan.gan.fit`; using a
fitted pair is :mod:`interpretgan.gan.explainer`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RESOLUTIONS = (4, 8, 16, 32)  # MNIST's four scales; in general scale k is resolution(k, base) pixels square


def resolution(scale: int, base: int = 4) -> int:
    """The side in pixels of progressive GAN's scale ``scale`` (0-based): ``base`` * 2**scale (``base`` 4, as in
    progressive GAN, for sides 32, 64, 128; :func:`scales_for` gives other sides theirs, e.g. 7 for 28 px)."""
    return base * 2 ** scale


def scales_for(side: int) -> tuple[int, int]:
    """``(base, n_scales)`` of a progressive generator for images ``side`` pixels square: the first scale is
    ``base`` (4 to 7) pixels and each next one doubles, the last being ``base * 2**(n_scales - 1)``, which equals
    ``side`` when ``side`` is such a number (28 -> (7, 3), 32 -> (4, 4), 64 -> (4, 5), 224 -> (7, 6)) and is
    the next larger one otherwise (100 -> (7, 5): 112 px, resized to 100 by the explainer)."""
    if not isinstance(side, int) or side < 4:
        raise ValueError(f"image side must be an integer of at least 4 pixels, got {side!r}")
    n_scales = int(math.floor(math.log2(side / 4))) + 1
    return -(-side // 2 ** (n_scales - 1)), n_scales


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

    With ``code_map`` the code is a ``code_dim`` x 4 x 4 map instead (paper Table 5, the CelebA model; ``map_side``
    other than 4 for generators of another first scale, :func:`scales_for`): convolutional latents go through stages
    of 3x3 conv + LeakyReLU + 2x2 average pooling until the map is 4x4 (a map that halving takes below
    ``map_side`` is then average-pooled to it), each stage doubling the channels up to ``code_dim`` (a 4x4 latent gets one conv and no pooling; a
    smaller one is first upsampled to 4x4, nearest), and vector latents through one FC layer to
    ``code_dim * 16`` values shaped as the map. For the full-width VGG16 at 128 px this is Table 5
    exactly: block1 (64x64x64) -> conv 128, 256, 512, 512; block2 -> 256, 512, 512; block3 -> 512, 512;
    block4 -> 512; block5 (512x4x4) -> conv 512; fc1..3 -> FC. The map is standardised per channel.

    Shape: input (N, *latent_shape); output (N, code_dim), or (N, code_dim, map_side, map_side) with ``code_map``.
    """

    def __init__(self, latent_shape: tuple[int, ...], code_dim: int = 128, min_side: int = 5,
                 code_map: bool = False, map_side: int = 4):
        super().__init__()
        self.latent_shape, self.code_map, self.map_side = tuple(latent_shape), code_map, map_side
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
        """Table 5's networks: latent -> (code_dim, m, m), m = ``map_side`` (4 in Table 5)."""
        layers: list[nn.Module] = []
        self.pooled: list[bool] = []
        m = self.map_side
        if len(self.latent_shape) == 3:
            c_in, side, _ = self.latent_shape
            self.upsampled = side < m
            if side < m:
                layers.append(nn.Upsample(size=(m, m), mode="nearest"))
                side = m
            if side == m:
                layers += [nn.Conv2d(c_in, code_dim, 3, padding=1), _act()]
                self.stages.append(code_dim)
                self.pooled.append(False)
            while side > m:  # the last stage (8x8 -> 4x4 in Table 5) gives code_dim channels
                c = code_dim if side // 2 < 2 * m else min(2 * c_in, code_dim)
                pool = nn.AvgPool2d(2) if side >= 2 * m else nn.AdaptiveAvgPool2d(m)  # the latter: e.g. 12 -> 7
                layers += [nn.Conv2d(c_in, c, 3, padding=1), _act(), pool]
                self.stages.append(c)
                self.pooled.append(True)
                c_in, side = c, (side // 2 if side >= 2 * m else m)
        else:
            layers += [nn.Flatten(), nn.Linear(int(np.prod(self.latent_shape)), code_dim * m * m),
                       nn.Unflatten(1, (code_dim, m, m))]
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
    output), r = base * 2**scale. ``channels[k]`` is the width at scale k (4x4, 8x8, 16x16, 32x32, ... with
    ``base`` 4; :func:`scales_for` gives the base of other sides, e.g. 7x7, 14x14, 28x28).
    With ``code_map`` the code is a (N, code_dim, base, base) map (:class:`CompressionNet` with ``code_map``) and
    the first layer is a 3x3 convolution on it instead of the linear base x base "transposed convolution"."""

    def __init__(self, code_dim: int = 128, channels: tuple[int, ...] = (64, 64, 32, 32), out_channels: int = 1,
                 code_map: bool = False, base: int = 4):
        super().__init__()
        c0 = channels[0]
        self.c0, self.code_map, self.base = c0, code_map, base
        self.norm_in = PixelNorm()
        if code_map:
            self.input = EqualizedConv2d(code_dim, c0, 3, padding=1)
        else:
            self.input = EqualizedLinear(code_dim, c0 * base * base, gain=math.sqrt(2) / base)  # "transposed conv"
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
        h = self.first(self.input(self.norm_in(code)).view(len(code), self.c0, self.base, self.base))  # either way
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

    def __init__(self, channels: tuple[int, ...] = (64, 64, 32, 32), in_channels: int = 1, base: int = 4):
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
                                   EqualizedLinear(c0 * base * base, c0), _act(), EqualizedLinear(c0, 1, gain=1.0))

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
