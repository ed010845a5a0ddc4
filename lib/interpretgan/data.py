"""Datasets as ready tensors: MNIST resized to 32x32, as the paper does.

Who should use it: anything that needs images. ``mnist32("train")`` returns an :class:`ImageSet`
holding every image as uint8 in memory (no per-image PIL decoding); ``ImageSet.batches`` yields
float batches in [0, 1] together with each image's index in the set (adversarial training keeps
per-sample state by that index).

The raw files are torchvision's layout (``<root>/MNIST/raw/*-ubyte``). A missing or truncated file
raises an error naming the path and what was expected; when a file is missing and the machine is
online, torchvision downloads it into the data root.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import paths
from .cache import atomic_path

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IMAGE_SIZE = 32
CLASSES = tuple(str(d) for d in range(10))


class DataError(FileNotFoundError):
    """The dataset is missing, truncated or malformed; the message names the path."""


@dataclass
class ImageSet:
    """Images (uint8, N x C x H x W) and labels (int64, N) held in memory.

    ``indices`` are the positions of these images in the full split (a subset keeps them), so
    results can always be traced back to the original test image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one image (C, H, W)."""
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A fixed random subset of ``n`` images (all when ``n`` is None or >= len); same seed, same images."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=g)[:n].sort().values
        return ImageSet(self.images[pick], self.labels[pick], self.indices[pick], f"{self.name}[{n}]")

    def tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float in [0, 1] and their labels, on ``device``."""
        return to_float(self.images, device), self.labels.to(device)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, i)``: float images in [0, 1], labels, and positions in this set."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            i = order[start:start + batch_size]
            yield to_float(self.images[i], device), self.labels[i].to(device), i

    def n_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def to_float(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 images to float32 in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def _read_idx(path: Path, magic: int, count: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read one IDX file, checking its header and length against what MNIST must hold."""
    if not path.is_file():
        raise DataError(f"missing MNIST file {path} (expected the IDX file with {count} items)")
    data = path.read_bytes()
    header = 4 * (1 + 1 + len(item_shape))
    want = header + count * int(np.prod(item_shape, dtype=np.int64))
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(1 + len(item_shape))]
    if dims != [count, *item_shape] or len(data) != want:
        raise DataError(f"{path} is truncated or malformed: header says {dims}, {len(data)} bytes; "
                        f"expected {[count, *item_shape]} and {want} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(count, *item_shape)


def _mnist_raw_dir(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    needed = [f for pair in MNIST_FILES.values() for f in pair[:2]]
    if all((raw / f).is_file() for f in needed):
        return raw
    try:  # online machines: let torchvision fetch the four files into the data root
        import torchvision

        torchvision.datasets.MNIST(str(root), train=True, download=True)
        torchvision.datasets.MNIST(str(root), train=False, download=True)
    except Exception as exc:  # offline, read-only root, ...
        missing = [f for f in needed if not (raw / f).is_file()]
        raise DataError(
            f"MNIST not found under data root {root}: expected {raw}/ to hold {', '.join(missing)} "
            f"(torchvision's layout); download failed ({type(exc).__name__}: {exc}). Set the "
            f"`data_root` parameter or INTERPRETGAN_DATA to a folder that holds MNIST/raw/."
        ) from None
    return raw


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images (N x C x H x W) to ``size`` x ``size``, rounded back to uint8
    (what torchvision's ``Resize`` on PIL images followed by ``ToTensor`` gives, to within 1/255)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def mnist32(split: str, data_root: str | os.PathLike | None = None) -> ImageSet:
    """MNIST ``split`` ("train" | "test") resized to 32x32: uint8 images (N x 1 x 32 x 32) and labels.

    The resized copy is cached in the artifact folder (keyed by the raw files' sizes and times).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    root = paths.data_root(data_root)
    raw = _mnist_raw_dir(root)
    img_name, lbl_name, count = MNIST_FILES[split]
    stamp = "|".join(f"{(raw / f).stat().st_size}:{int((raw / f).stat().st_mtime)}" for f in (img_name, lbl_name))
    key = hashlib.sha256(f"{raw.resolve()}|{stamp}|{IMAGE_SIZE}".encode()).hexdigest()[:16]
    cached = paths.artifacts_root() / "data" / f"mnist32-{split}-{key}.safetensors"
    if cached.is_file():
        t = load_file(str(cached))
        return ImageSet(t["images"], t["labels"], torch.arange(count), f"mnist32-{split}")
    images = _read_idx(raw / img_name, 0x00000803, count, (28, 28))
    labels = _read_idx(raw / lbl_name, 0x00000801, count, ())
    x = resize_to(torch.from_numpy(images.copy()).unsqueeze(1), IMAGE_SIZE).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    if int(y.max()) > 9:
        raise DataError(f"{raw / lbl_name} holds labels outside 0..9")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({"images": x, "labels": y}, str(tmp))
    return ImageSet(x, y, torch.arange(count), f"mnist32-{split}")
