"""Datasets as ready tensors: MNIST resized to 32x32, as the paper does, CIFAR-10 and aligned CelebA faces.

Who should use it: anything that needs images. ``mnist32("train")`` (or ``cifar10("train")``) returns an :class:`ImageSet`
holding every image as uint8 in memory (no per-image PIL decoding); ``ImageSet.batches`` yields
float batches in [0, 1] together with each image's index in the set (adversarial training keeps
per-sample state by that index).

The raw files are torchvision's layout (``<root>/MNIST/raw/*-ubyte``). A missing or truncated file
raises an error naming the path and what was expected; when a file is missing and the machine is
online, torchvision downloads it into the data root.

CIFAR-10 (``cifar10(split)``, 3 x 32 x 32) is read from the real python batches
(``<root>/cifar-10-batches-py/``) when they are present, else from the lossy JPEG copy
(``<root>/cifar10-jpeg/{train,test}/<class>/NNNN.jpg``); the set's ``name`` and
:func:`cifar10_source` say which, because results on the JPEG copy must be reported as
"CIFAR-10 (JPEG copy)". Either is decoded once and then read from a safetensors cache.

CelebA (``celeba(split, size=64)``, 3 x size x size, label ``Male``) is read from the whole data set in
torchvision's layout (``<root>/celeba/``) when present, else from the 6,000-face subset
(``<root>/celeba-subset/``); each face keeps its 40 attributes (``ImageSet.attribute("Wearing_Hat")``).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from .progress import tqdm

from . import paths
from .cache import atomic_path, read_weights

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IMAGE_SIZE = 32
CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{k}" for k in range(1, 6)), "test": ("test_batch",)}
CIFAR10_REAL_DIR = "cifar-10-batches-py"
CIFAR10_JPEG_DIR = "cifar10-jpeg"
CIFAR10_JPEG_NOTE = ("cifar10-jpeg (lossy JPEG copy of CIFAR-10: pixels differ by up to 14/255; "
                     "report results as 'CIFAR-10 (JPEG copy)')")


class DataError(FileNotFoundError):
    """The dataset is missing, truncated or malformed; the message names the path."""


def _existing_root(root: Path) -> Path:
    """``root`` if it is a folder, else a DataError naming it (checked before anything is downloaded)."""
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (or is not a folder). Set the `data_root` parameter or "
                        f"INTERPRETGAN_DATA to the folder that holds the datasets (e.g. ../shared/datasets)")
    return root


def _online(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds (no download is tried offline)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _download(root: Path, folder: str, host: str, fetch) -> None:
    """Run ``fetch()`` (a torchvision download into ``root``) when ``host`` is reachable; on any failure remove
    the folders it created under ``root`` (a user's data root is left as it was found) and re-raise."""
    new_folder = not (root / folder).exists()
    if not _online(host):
        raise ConnectionError(f"{host} is not reachable (offline)")
    try:
        fetch()
    except Exception:
        import shutil

        if new_folder:
            shutil.rmtree(root / folder, ignore_errors=True)
        raise


def random_positions(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random ``n`` of the positions ``0 .. n_total - 1``, sorted (all of them when ``n >= n_total``); the
    same seed gives the same positions (what :meth:`ImageSet.subset` takes)."""
    if n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


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
    attributes: torch.Tensor | None = None   # (N, A) bool, e.g. CelebA's 40 attributes; None elsewhere
    attribute_names: tuple[str, ...] = ()

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
        pick = random_positions(len(self), n, seed)
        return self._at(pick, f"{self.name}[{n}]")

    def _at(self, positions: torch.Tensor, name: str) -> "ImageSet":
        attrs = None if self.attributes is None else self.attributes[positions]
        return ImageSet(self.images[positions], self.labels[positions], self.indices[positions], name, attrs,
                        self.attribute_names)

    def take(self, positions: torch.Tensor | slice) -> "ImageSet":
        """The images at ``positions`` of this set (a slice or an index tensor), indices kept."""
        if isinstance(positions, slice):
            positions = torch.arange(len(self))[positions]
        return self._at(positions, self.name)

    def attribute(self, name: str) -> torch.Tensor:
        """The boolean column of attribute ``name`` (N,), e.g. ``faces.attribute("Wearing_Hat")``."""
        if name not in self.attribute_names:
            raise ValueError(f"attribute must be one of {list(self.attribute_names)}, got {name!r}")
        return self.attributes[:, self.attribute_names.index(name)]

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


def concat(sets: list[ImageSet], name: str | None = None) -> ImageSet:
    """One ImageSet of ``sets`` in order (e.g. CelebA's validation and test faces); ``indices`` are kept as they
    were (positions in each set's own split), attributes are kept where every set has the same ones."""
    same = all(s.attribute_names == sets[0].attribute_names and s.attributes is not None for s in sets)
    return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]),
                    torch.cat([s.indices for s in sets]), name or "+".join(s.name for s in sets),
                    torch.cat([s.attributes for s in sets]) if same else None,
                    sets[0].attribute_names if same else ())


def attribute_labels(images: ImageSet, attribute: str, balanced: bool = False) -> ImageSet:
    """``images`` labelled 1 where they have ``attribute`` (e.g. CelebA's "Eyeglasses") and 0 elsewhere; with
    ``balanced`` the rarer class's images are repeated in turn until both classes are as many (for training a
    reader of a rare attribute: 241 of the shared subset's 4,560 training faces wear glasses)."""
    has = images.attribute(attribute)
    relabelled = ImageSet(images.images, has.long(), images.indices, f"{images.name}:{attribute}", images.attributes,
                          images.attribute_names)
    if not balanced:
        return relabelled
    yes, no = torch.nonzero(has).flatten(), torch.nonzero(~has).flatten()
    rare, common = (yes, no) if len(yes) < len(no) else (no, yes)
    if len(rare) == 0:
        raise ValueError(f"no image of {images.name!r} has the class of {attribute!r} to balance")
    return relabelled.take(torch.cat([common, rare[torch.arange(len(common)) % len(rare)]]).sort().values)


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
    raw = _existing_root(root) / "MNIST" / "raw"
    needed = [f for pair in MNIST_FILES.values() for f in pair[:2]]
    if all((raw / f).is_file() for f in needed):
        return raw
    try:  # online machines: let torchvision fetch the four files into the data root
        import torchvision

        def fetch():
            torchvision.datasets.MNIST(str(root), train=True, download=True)
            torchvision.datasets.MNIST(str(root), train=False, download=True)

        _download(root, "MNIST", "ossci-datasets.s3.amazonaws.com", fetch)
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
    t = read_weights(cached, dtype=None, expect=("images", "labels"))  # a damaged copy is moved aside and rebuilt
    if t is not None:
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


# ----------------------------------------------------------------------------------------------
# CIFAR-10


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for the CIFAR-10 batches that accepts numpy arrays, lists, dicts and bytes only."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch of CIFAR-10: images (n, 3, 32, 32) uint8 and labels (n,) int64."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
        images = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' has shape {images.shape} and dtype {images.dtype}; "
                        f"expected (n, 3072) uint8")
    if labels.shape != (len(images),) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{path}: b'labels' must hold {len(images)} labels in 0..9")
    return images.reshape(-1, 3, 32, 32), labels


def _jpeg_files(split_dir: Path) -> tuple[list[Path], list[int]]:
    """The JPEG files of one split, ordered by class (CIFAR-10 label order) then file name."""
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir()) if split_dir.is_dir() else []
    if found != sorted(CIFAR10_CLASSES):
        raise DataError(f"{split_dir} must hold one folder per CIFAR-10 class {list(CIFAR10_CLASSES)}; "
                        f"found {found}")
    files, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        names = sorted(e.name for e in os.scandir(split_dir / cls) if e.name.endswith(".jpg"))
        files += [split_dir / cls / n for n in names]
        labels += [label] * len(names)
    return files, labels


def _decode_jpegs(files: list[Path], desc: str = "") -> torch.Tensor:
    """Decode 32x32 RGB JPEG files into one uint8 tensor (N x 3 x 32 x 32) with PIL."""
    from PIL import Image
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for k, f in enumerate(tqdm(files, desc=desc, leave=False, disable=None, mininterval=1.0)):
        with Image.open(f) as img:
            arr = np.asarray(img.convert("RGB"))
        if arr.shape != (32, 32, 3):
            raise DataError(f"{f} decodes to shape {arr.shape}; expected 32x32 RGB")
        out[k] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _cifar10_dir(root: Path) -> tuple[str, Path]:
    """``("real", <root>/cifar-10-batches-py)`` or ``("jpeg", <root>/cifar10-jpeg)``: real batches first,
    then the JPEG copy, then a torchvision download of the real batches; else a DataError."""
    real, jpeg = _existing_root(root) / CIFAR10_REAL_DIR, root / CIFAR10_JPEG_DIR
    needed = [n for names in CIFAR10_BATCHES.values() for n in names]
    if all((real / n).is_file() for n in needed):
        return "real", real
    if (jpeg / "train").is_dir() and (jpeg / "test").is_dir():
        return "jpeg", jpeg
    try:  # online machines: let torchvision fetch the real batches into the data root
        import torchvision

        _download(root, CIFAR10_REAL_DIR, "www.cs.toronto.edu",
                  lambda: torchvision.datasets.CIFAR10(str(root), train=True, download=True))
    except Exception as exc:  # offline, read-only root, ...
        missing = [n for n in needed if not (real / n).is_file()]
        raise DataError(
            f"CIFAR-10 not found under data root {root}: expected either {real}/ holding "
            f"{', '.join(missing)} (the python batches) or {jpeg}/ holding train/<class>/*.jpg and "
            f"test/<class>/*.jpg (the JPEG copy); download failed ({type(exc).__name__}: {exc}). Set the "
            f"`data_root` parameter or INTERPRETGAN_DATA to a folder that holds one of them."
        ) from None
    return "real", real


def cifar10_source(data_root: str | os.PathLike | None = None) -> str:
    """Which CIFAR-10 :func:`cifar10` reads: "cifar-10-batches-py" (the real one) or the JPEG copy's
    note (``CIFAR10_JPEG_NOTE``), to be quoted wherever results are reported."""
    kind, _ = _cifar10_dir(paths.data_root(data_root))
    return CIFAR10_REAL_DIR if kind == "real" else CIFAR10_JPEG_NOTE


def cifar10(split: str, data_root: str | os.PathLike | None = None) -> ImageSet:
    """CIFAR-10 ``split`` ("train" | "test"): uint8 images (N x 3 x 32 x 32) and labels in
    :data:`CIFAR10_CLASSES` order (50,000 / 10,000 images in the full data set).

    Reads the real python batches when present (name ``cifar10-{split}``), else the lossy JPEG copy
    (name ``cifar10-jpeg-{split}``, images ordered by class then file name). The decoded split is
    cached in the artifact folder, keyed by the source files' names, sizes and times.
    """
    if split not in CIFAR10_BATCHES:
        raise ValueError(f"split must be one of {sorted(CIFAR10_BATCHES)}, got {split!r}")
    root = paths.data_root(data_root)
    kind, folder = _cifar10_dir(root)
    if kind == "real":
        files, name = [folder / n for n in CIFAR10_BATCHES[split]], f"cifar10-{split}"
        jpeg_labels = None
    else:
        files, jpeg_labels = _jpeg_files(folder / split)
        name = f"cifar10-jpeg-{split}"
        if not files:
            raise DataError(f"{folder / split} holds no .jpg files")
    stamp = hashlib.sha256()
    for f in files:
        st = f.stat()
        stamp.update(f"{f.relative_to(folder)}:{st.st_size}:{int(st.st_mtime)}|".encode())
    key = hashlib.sha256(f"{folder.resolve()}|{stamp.hexdigest()}".encode()).hexdigest()[:16]
    cached = paths.artifacts_root() / "data" / f"{name}-{key}.safetensors"
    t = read_weights(cached, dtype=None, expect=("images", "labels"))  # a damaged copy is moved aside and rebuilt
    if t is not None:
        return ImageSet(t["images"], t["labels"], torch.arange(len(t["labels"])), name)
    if kind == "real":
        parts = [_read_cifar_batch(f) for f in files]
        x = torch.from_numpy(np.concatenate([p[0] for p in parts])).contiguous()
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    else:
        x = _decode_jpegs(files, desc=name)
        y = torch.tensor(jpeg_labels, dtype=torch.int64)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({"images": x, "labels": y}, str(tmp))
    return ImageSet(x, y, torch.arange(len(y)), name)


# ----------------------------------------------------------------------------------------------
# CelebA (aligned faces, gender)

CELEBA_FULL_DIR = "celeba"            # torchvision's layout of the whole data set
CELEBA_SUBSET_DIR = "celeba-subset"   # the 6,000-face subset (official partitions and attributes)
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}
CELEBA_LABEL = "Male"
CELEBA_CLASSES = ("female", "male")   # label 0: Male = -1, label 1: Male = 1
CELEBA_ALIGNED = (178, 218)           # width, height of every img_align_celeba file
#: progressive GAN's crop of aligned CelebA (Karras et al. 2018, dataset_tool): the 128x128 square
#: centred at x = 89, y = 121 of the 178 x 218 image; then resized to the profile's size
CELEBA_CROP = (89 - 64, 121 - 64, 89 + 64, 121 + 64)   # left, top, right, bottom
CELEBA_SIZES = (32, 64, 128)


def _celeba_dir(root: Path) -> Path:
    """``<root>/celeba`` (the full data set, torchvision's layout) when it holds the aligned images, else
    ``<root>/celeba-subset``; each must hold ``img_align_celeba/``, ``list_attr_celeba.txt`` and
    ``list_eval_partition.txt``, else a DataError naming what is missing."""
    _existing_root(root)
    for name in (CELEBA_FULL_DIR, CELEBA_SUBSET_DIR):
        folder = root / name
        if (folder / "img_align_celeba").is_dir():
            missing = [f for f in ("list_attr_celeba.txt", "list_eval_partition.txt") if not (folder / f).is_file()]
            if missing:
                raise DataError(f"CelebA folder {folder} has img_align_celeba/ but lacks {', '.join(missing)} "
                                f"(the official annotation files)")
            return folder
    raise DataError(f"CelebA not found under data root {root}: expected {root / CELEBA_FULL_DIR}/ (torchvision's "
                    f"layout: img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt) or "
                    f"{root / CELEBA_SUBSET_DIR}/ (the same files for a subset). Set the `data_root` parameter or "
                    f"INTERPRETGAN_DATA to a folder that holds one of them.")


def read_celeba_attributes(path: Path) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """The official attribute file: (file names, the 40 attribute names, an (N, 40) bool array).
    Its first line is the row count, the second the attribute names, then one ``NNNNNN.jpg`` row of
    -1/1 values per image; a file that does not follow this raises a DataError naming it and the line."""
    if not path.is_file():
        raise DataError(f"missing CelebA attribute file {path} (expected the official list_attr_celeba.txt)")
    lines = path.read_text().splitlines()
    try:
        count = int(lines[0].strip())
        names = tuple(lines[1].split())
    except (IndexError, ValueError):
        raise DataError(f"{path} is not a CelebA attribute file: expected a row count on line 1 and the "
                        f"attribute names on line 2") from None
    if CELEBA_LABEL not in names:
        raise DataError(f"{path}: line 2 must name the attributes, including {CELEBA_LABEL!r}; got {names[:5]}...")
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise DataError(f"{path} is truncated or malformed: line 1 says {count} images, it holds {len(rows)} rows")
    files, values = [], np.empty((count, len(names)), dtype=bool)
    for k, row in enumerate(rows):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise DataError(f"{path}, line {k + 3}: expected a file name and {len(names)} values of -1 or 1, "
                            f"got {' '.join(row[:4])}...")
        files.append(row[0])
        values[k] = [v == "1" for v in row[1:]]
    return files, names, values


def read_celeba_partitions(path: Path) -> dict[str, int]:
    """The official partition file: file name -> 0 (train), 1 (valid) or 2 (test)."""
    if not path.is_file():
        raise DataError(f"missing CelebA partition file {path} (expected the official list_eval_partition.txt)")
    out = {}
    for k, line in enumerate(path.read_text().splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}, line {k + 1}: expected 'NNNNNN.jpg 0|1|2', got {line[:40]!r}")
        out[parts[0]] = int(parts[1])
    return out


def crop_face(image, size: int) -> np.ndarray:
    """One aligned CelebA PIL image -> (size, size, 3) uint8: progressive GAN's centred 128x128 crop
    (:data:`CELEBA_CROP`), resized with an antialiased bilinear filter when ``size`` != 128."""
    from PIL import Image
    face = image.convert("RGB").crop(CELEBA_CROP)
    if size != 128:
        face = face.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(face)


def _decode_faces(folder: Path, files: list[str], size: int, desc: str) -> torch.Tensor:
    """Decode, check (178 x 218, complete) and crop every listed aligned face: (N, 3, size, size) uint8."""
    from PIL import Image
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for k, name in enumerate(tqdm(files, desc=desc, leave=False, disable=None, mininterval=1.0)):
        path = folder / "img_align_celeba" / name
        if not path.is_file():
            raise DataError(f"missing CelebA image {path} (listed in {folder / 'list_attr_celeba.txt'})")
        try:
            with Image.open(path) as img:
                img.load()
                if img.size != CELEBA_ALIGNED:
                    raise DataError(f"{path} is {img.size[0]}x{img.size[1]}; expected an aligned CelebA image "
                                    f"of {CELEBA_ALIGNED[0]}x{CELEBA_ALIGNED[1]}")
                out[k] = crop_face(img, size)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path} failed to decode ({type(exc).__name__}: {exc}); expected a complete "
                            f"{CELEBA_ALIGNED[0]}x{CELEBA_ALIGNED[1]} JPEG") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def celeba_source(data_root: str | os.PathLike | None = None) -> str:
    """Which CelebA :func:`celeba` reads: "celeba" (the whole data set) or "celeba-subset"."""
    return _celeba_dir(paths.data_root(data_root)).name


def _celeba_split(folder: Path, split: str) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """The file names, attribute names and attribute rows of ``split``'s faces, from the annotation files of
    ``folder`` (every listed face must have a partition)."""
    attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    files, names, values = read_celeba_attributes(attr_file)
    partitions = read_celeba_partitions(part_file)
    unknown = [f for f in files if f not in partitions]
    if unknown:
        raise DataError(f"{part_file} has no partition for {len(unknown)} images of {attr_file} "
                        f"(first: {unknown[0]})")
    keep = [k for k, f in enumerate(files) if partitions[f] == CELEBA_SPLITS[split]]
    if not keep:
        raise DataError(f"{attr_file} lists no image of the {split!r} partition")
    return [files[k] for k in keep], names, values[keep]


def _check_split(split: str) -> None:
    if split not in CELEBA_SPLITS:
        raise ValueError(f"split must be one of {list(CELEBA_SPLITS)}, got {split!r}")


def celeba_split_size(split: str, data_root: str | os.PathLike | None = None) -> int:
    """How many faces ``split`` of :func:`celeba` holds, from the annotation files alone (nothing decoded)."""
    _check_split(split)
    return len(_celeba_split(_celeba_dir(paths.data_root(data_root)), split)[0])


def celeba(split: str, data_root: str | os.PathLike | None = None, size: int = 64) -> ImageSet:
    """Aligned CelebA ``split`` ("train" | "valid" | "test", the official partitions) for gender:
    uint8 faces (N x 3 x size x size, progressive GAN's centred crop), labels 1 for ``Male`` and 0
    otherwise (:data:`CELEBA_CLASSES`), and all 40 attributes (``attributes``, ``attribute_names``).

    Reads ``<root>/celeba`` (the whole data set) when present, else ``<root>/celeba-subset`` (6,000
    faces: 4,560 / 780 / 660). The annotation files and every listed image are checked (a missing or
    truncated file names itself) and decoded once into the artifact folder; later calls read that,
    keyed by the folder, the annotation files' sizes and times, and ``size``. ``indices`` are positions
    in the split (file order).
    """
    _check_split(split)
    if size not in CELEBA_SIZES:
        raise ValueError(f"size must be one of {list(CELEBA_SIZES)}, got {size!r}")
    folder = _celeba_dir(paths.data_root(data_root))
    attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    stamp = "|".join(f"{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in (attr_file, part_file))
    key = hashlib.sha256(f"{folder.resolve()}|{stamp}|{size}|crop{CELEBA_CROP}".encode()).hexdigest()[:16]
    name = f"{folder.name}-{split}-{size}"
    cached = paths.artifacts_root() / "data" / f"{name}-{key}.safetensors"
    t = read_weights(cached, dtype=None, expect=("images", "labels", "attributes", "attribute_names"))
    if t is not None:
        names = tuple(t["attribute_names"].numpy().tobytes().decode().split(","))
        return ImageSet(t["images"], t["labels"], torch.arange(len(t["labels"])), name, t["attributes"].bool(), names)
    files, names, values = _celeba_split(folder, split)
    x = _decode_faces(folder, files, size, desc=name)
    attrs = torch.from_numpy(values)
    y = attrs[:, names.index(CELEBA_LABEL)].long()
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({"images": x, "labels": y, "attributes": attrs.to(torch.uint8),
                   "attribute_names": torch.frombuffer(bytearray(",".join(names).encode()), dtype=torch.uint8)},
                  str(tmp))
    return ImageSet(x, y, torch.arange(len(y)), name, attrs, names)


#: The datasets of the zoo: 32x32 MNIST (:func:`mnist32`), CIFAR-10 (:func:`cifar10`) and aligned CelebA
#: faces for gender (:func:`celeba`).
DATASETS = ("mnist", "cifar10", "celeba")


def load(dataset: str, split: str, data_root: str | os.PathLike | None = None, size: int | None = None) -> ImageSet:
    """The ImageSet of ``dataset`` (one of :data:`DATASETS`) and ``split`` ("train" | "test"; CelebA also
    "valid"); ``size`` is CelebA's side in pixels (default 64; MNIST and CIFAR-10 are 32)."""
    if dataset == "mnist":
        return mnist32(split, data_root)
    if dataset == "cifar10":
        return cifar10(split, data_root)
    if dataset == "celeba":
        return celeba(split, data_root, 64 if size is None else size)
    raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
