"""Differentiable augmentation for the critic (Zhao et al. 2020, "DiffAugment"), for GANs on small data.

Who should use it: :mod:`interpretgan.gan`, when ``GANSettings.augment`` names policies. The same random
family of transforms is applied to real and generated images alike, every time the critic sees them (its own
update, the gradient penalty and the generator's adversarial loss), so the critic cannot tell real from fake by
the augmentation, and the generator's gradients pass through it. The interpretability term L_I always reads
the unaugmented explanation.

Images are in the critic's units, [-1, 1] (-1 black). Policies:

- ``translation``: shift by up to 1/8 of the side in each direction (whole pixels), black filling the border;
- ``cutout``: set a random square of half the side to 0 (mid-grey);
- ``color``: brightness (add U(-0.5, 0.5)), saturation (scale each pixel's deviation from its colour mean by
  U(0, 2); nothing for one channel), contrast (scale the deviation from the image mean by U(0.5, 1.5)).

Example::

    >>> x_aug = diff_augment(x, ("translation", "cutout"))   # same shape, differentiable in x
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "color")


def check_policies(policies) -> tuple[str, ...]:
    """``policies`` as a tuple of names of :data:`POLICIES`; ValueError naming an unknown one."""
    policies = tuple(policies)
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise ValueError(f"augment policies must be among {', '.join(POLICIES)}; got {', '.join(map(repr, bad))}")
    return policies


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by whole pixels, up to ``ratio`` of its side in each direction, black (-1) filling in."""
    n, _, h, w = x.shape
    sx, sy = int(w * ratio + 0.5), int(h * ratio + 0.5)
    if sx == 0 and sy == 0:
        return x
    dx = torch.randint(-sx, sx + 1, (n,), device=x.device)
    dy = torch.randint(-sy, sy + 1, (n,), device=x.device)
    padded = F.pad(x + 1, (sx, sx, sy, sy))  # zeros of x + 1: black
    rows = (torch.arange(h, device=x.device)[None, :] + sy - dy[:, None])  # n x h
    cols = (torch.arange(w, device=x.device)[None, :] + sx - dx[:, None])  # n x w
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2) - 1  # advanced indexing puts the channel last


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Each image with a random square of ``ratio`` of its side (anywhere, clipped at the border) set to 0."""
    n, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device) - cw // 2
    r = torch.arange(h, device=x.device)[None, :, None]
    c = torch.arange(w, device=x.device)[None, None, :]
    inside = (r >= top) & (r < top + ch) & (c >= left) & (c < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation (3 channels only) and contrast per image."""
    n = len(x)
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


_OPS = {"color": color, "translation": translate, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: tuple[str, ...]) -> torch.Tensor:
    """``x`` (N x C x H x W, [-1, 1] units) through each of ``policies`` in DiffAugment's order (colour,
    translation, cutout), with fresh random parameters per image; ``x`` itself when ``policies`` is empty."""
    for name in ("color", "translation", "cutout"):
        if name in policies:
            x = _OPS[name](x)
    return x
