"""Your own network in the package: load it from a file or a module, give it its weights, check it, pick its
layers, and give it images of the side it expects.

Who should use it: ``08_your_model`` and ``python -m interpretgan.diagnose`` (layers fitted in parallel under
``torchrun``); anyone diagnosing a network the zoo does not have. Everything here refuses what it cannot use with
an error that names the parameter, the file or the layer, before any fit starts.

Example::

    >>> model = load_model("examples/lenet5.py:lenet5", weights="weights/examples-lenet5.safetensors")
    >>> train = images_for("mnist", "train", image_size=28)
    >>> check_model(model, train, num_classes=10)
    >>> find_layers(model, train.take(slice(0, 2)).tensors()[0])
    ['2', '5', '8', '10', '11']
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import paths
from .cache import WeightsError, describe_file, load_weights, sha256_file
from .data import DATASETS, MNIST_FILES, ImageSet, _mnist_raw_dir, _read_idx, load, resize_to

#: the side in pixels a dataset's images usually have in models people bring (MNIST models take 28 x 28)
USUAL_SIDE = {"mnist": 28, "cifar10": 32, "celeba": 64}
#: classes per dataset (gender for CelebA)
NUM_CLASSES = {"mnist": 10, "cifar10": 10, "celeba": 2}
#: modules that only reshape or regularise: never a layer's latent of their own
_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity)


class ModelError(ValueError):
    """A model, its weights or its layers cannot be used as given (the message names what and why)."""


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The factory named by ``spec``: ``path/to/file.py:factory`` (a file, relative to the working folder or the
    repository) or ``package.module:factory`` (importable)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ModelError(f"model must be 'path/to/file.py:factory' or 'package.module:factory', got {spec!r}")
    where, name = spec.split(":")
    if where.endswith(".py"):
        path = find_file(where)
        if not path.is_file():
            raise ModelError(f"model file {where} does not exist (relative to the working folder or the repository)")
        module_name = f"_interpretgan_user_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ModelError(f"model file {path} does not import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ModelError(f"model module {where!r} does not import: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ModelError(f"{where} has no callable {name!r}; it defines: {', '.join(found) or 'nothing callable'}")
    return factory


def load_model(spec: str, weights: str | os.PathLike | None = None, seed: int = 0) -> nn.Module:
    """The ``nn.Module`` that ``spec``'s factory returns (see :func:`load_factory`), built after
    ``torch.manual_seed(seed)`` (so that every process builds the same initial weights), with ``weights`` loaded
    (:func:`load_user_weights`) when given, in eval mode."""
    factory = load_factory(spec)
    torch.manual_seed(seed)
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_user_weights(model, weights)
    return model.eval()


def _read_state(path: Path, shown: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or from a ``torch.save`` file (``weights_only=True``; a checkpoint
    dict with a ``state_dict`` or ``model`` entry is unwrapped)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # neither torch.save's zip nor a pickle
        try:
            return load_weights(path, dtype=None)  # names the file and what it holds when it is not safetensors
        except WeightsError as err:
            raise WeightsError(str(err).replace(str(path), str(shown), 1)) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{shown} cannot be read as weights: it holds {describe_file(path)} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{shown} holds {type(state).__name__}, not a state dict of tensors")
    return state


def find_file(path: str | os.PathLike) -> Path:
    """``path`` as given when it exists there (relative to the working folder), else relative to the repository
    (``weights/...`` from a notebook running in ``notebooks/``); the given path when neither exists."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (paths.REPO_ROOT / path).exists():
        return paths.REPO_ROOT / path
    return path


def load_user_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the state dict in ``path`` (safetensors, or a ``torch.save`` file read with ``weights_only=True``)
    into ``model``; a file that is not weights, or whose tensors do not match the model's, is refused with what
    it holds and what the model expects."""
    given, path = Path(path), find_file(path)
    if not path.is_file():
        raise ModelError(f"weights file {given} does not exist")
    state = _read_state(path, given)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        def few(names):
            return ", ".join(names[:6]) + (f" (and {len(names) - 6} more)" if len(names) > 6 else "")
        parts = ([f"the model expects {len(missing)} tensors the file lacks: {few(missing)}"] if missing else []) + \
                ([f"the file holds {len(unexpected)} the model lacks: {few(unexpected)}"] if unexpected else []) + \
                ([f"shapes differ: {few(wrong)}"] if wrong else [])
        raise WeightsError(f"{given} does not match the model ({len(state)} tensors in the file, {len(expected)} "
                           f"in the model): " + "; ".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def images_for(dataset: str, split: str, data_root: str | os.PathLike | None = None,
               image_size: int | None = None) -> ImageSet:
    """``split`` of ``dataset`` at ``image_size`` pixels square (default :data:`USUAL_SIDE`): "mnist",
    "cifar10", "celeba" (the package's loaders; MNIST at 28 px is the original digits, other sides are resized
    with antialiasing), or a folder in ImageFolder layout (``<folder>/train/<class>/*.png``, ``<folder>/test/...``;
    classes in sorted order; RGB unless every image is greyscale)."""
    if dataset in DATASETS:
        side = image_size or USUAL_SIDE[dataset]
        if dataset == "mnist" and side == 28:
            return _mnist28(split, data_root)
        data = load(dataset, split, data_root, size=side if dataset == "celeba" else None)
    else:
        data = image_folder(dataset, split)
        side = image_size or data.shape[-1]
    if data.shape[-1] == side:
        return data
    return ImageSet(resize_to(data.images, side), data.labels, data.indices, f"{data.name}@{side}",
                    data.attributes, data.attribute_names)


def _mnist28(split: str, data_root) -> ImageSet:
    """The original 28 x 28 MNIST digits (``mnist32`` resizes them to the paper's 32 x 32)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    raw = _mnist_raw_dir(paths.data_root(data_root))
    img_name, lbl_name, count = MNIST_FILES[split]
    x = torch.from_numpy(_read_idx(raw / img_name, 0x00000803, count, (28, 28)).copy()).unsqueeze(1)
    y = torch.from_numpy(_read_idx(raw / lbl_name, 0x00000801, count, ()).astype(np.int64))
    return ImageSet(x.contiguous(), y, torch.arange(count), f"mnist28-{split}")


def image_folder(root: str | os.PathLike, split: str) -> ImageSet:
    """``<root>/<split>`` in ImageFolder layout as an ImageSet (uint8; every image must have one size)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    folder = Path(root) / split
    if not folder.is_dir():
        raise ModelError(f"dataset must be one of {list(DATASETS)} or a folder with train/ and test/ in ImageFolder "
                         f"layout; {folder} is not a folder")
    found = ImageFolder(str(folder))
    images = [pil_to_tensor(found.loader(p)) for p, _ in found.samples]
    sizes = {tuple(x.shape[1:]) for x in images}
    if len(sizes) != 1:
        raise ModelError(f"the images in {folder} have {len(sizes)} different sizes ({sorted(sizes)[:3]} ...): "
                         f"give them one size")
    channels = 1 if all(x.shape[0] == 1 for x in images) else 3
    x = torch.stack([x if x.shape[0] == channels else x[:1].expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
                     for x in images])
    return ImageSet(x, torch.tensor([c for _, c in found.samples]), torch.arange(len(x)), f"{Path(root).name}-{split}")


def check_model(model: nn.Module, data: ImageSet, num_classes: int) -> None:
    """Refuse, before any fit, a model that cannot be diagnosed on ``data``: images not square, a forward pass
    that fails on them, outputs that are not (N, ``num_classes``) logits, or outputs that change between two
    passes in eval mode (dropout or another random layer left on)."""
    _, h, w = data.shape
    if h != w:
        raise ModelError(f"InterpretGAN explains square images; these are {h} x {w} pixels: crop or resize them")
    device = next(model.parameters()).device
    x = data.take(slice(0, 4)).tensors(device)[0]
    model.eval()
    with torch.no_grad():
        try:
            a, b = model(x), model(x)
        except Exception as exc:
            raise ModelError(f"the model fails on {tuple(x.shape[1:])} images in [0, 1]: {type(exc).__name__}: "
                             f"{exc} (does image_size match the side it expects?)") from exc
    if not isinstance(a, torch.Tensor) or a.shape != (len(x), num_classes) or not a.is_floating_point():
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ModelError(f"the model's output on {len(x)} images is {shape}, not ({len(x)}, {num_classes}) logits of "
                         f"the dataset's {num_classes} classes")
    if not torch.equal(a, b):
        raise ModelError(f"the model's output changes between two passes in eval mode (by up to "
                         f"{(a - b).abs().max().item():.3g}): a random layer is on at evaluation; InterpretGAN needs "
                         f"a deterministic f")


def find_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Every conv block and linear layer of ``model``, in forward order: a model's ``layer_names`` where it has
    them; else, over the top-level children, each container that holds a convolution or a linear layer (a
    residual block, a stage), and for each bare ``Conv2d`` / ``Linear`` the last module of its block (the
    activation, pooling or norm that follows it before the next such layer; reshaping and dropout skipped)."""
    if hasattr(model, "layer_names"):
        return list(model.layer_names)
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n)) for n, m in model.named_children()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    layers: list[str] = []
    current: str | None = None  # the block of the last bare conv / linear, still open
    for name in dict.fromkeys(order):
        module = model.get_submodule(name)
        weighted = any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if current is not None:
                layers.append(current)
            current = name
        elif weighted:  # a block of its own
            if current is not None:
                layers.append(current)
            layers.append(name)
            current = None
        elif current is not None and not isinstance(module, _SHAPE_ONLY) and not list(module.parameters(False)):
            current = name  # an activation or pooling closing the bare layer's block
        elif current is not None and isinstance(module, nn.modules.batchnorm._BatchNorm):
            current = name
    if current is not None:
        layers.append(current)
    if not layers:
        raise ModelError("found no convolution or linear layer among the model's top-level children: name the "
                         "layers to explain (names from model.named_modules())")
    return layers


def training_settings(spec: str, dataset: str = "mnist", image_size: int | None = None, epochs: int = 10,
                      lr: float = 0.01, lr_milestones: tuple[int, ...] = (5,), batch_size: int = 128,
                      seed: int = 0) -> dict:
    """Every setting of :func:`train_model` (its cache key and its shipped name are made from these): the paper's
    natural MNIST schedule by default (SGD with momentum 0.9, lr 0.01 then 0.001 after epoch 5, 10 epochs)."""
    side = image_size or USUAL_SIDE.get(dataset)
    path = find_file(spec.split(":")[0])
    return {"kind": "user-classifier", "version": 1, "model": spec, "dataset": str(dataset), "image_size": side,
            "model_file": sha256_file(path) if path.is_file() else None, "epochs": epochs, "lr": lr,
            "lr_milestones": list(lr_milestones), "batch_size": batch_size, "seed": seed, "training": "natural"}


def train_model(settings: dict, data_root=None, device=None, progress: bool = True,
                exact: bool | None = None) -> tuple[nn.Module, dict]:
    """Train the model of :func:`training_settings` naturally with the package's loop
    (:func:`interpretgan.training.train_natural`), through the artifact cache like the zoo's models
    (:func:`interpretgan.zoo._through_cache`: a finished entry, else the shipped weights of this key, else training,
    resumable); returns the model (eval mode) and its history. Maintainers ship the result with :func:`ship_model`."""
    from .cache import entry, settings_key
    from .training import train_natural
    from .zoo import _through_cache

    folder = entry("user-classifiers", settings)
    model = load_model(settings["model"], seed=settings["seed"]).to(device or "cpu")

    def train():
        train_set = images_for(settings["dataset"], "train", data_root, settings["image_size"])
        test_set = images_for(settings["dataset"], "test", data_root, settings["image_size"])
        history = train_natural(model, train_set, test_set, epochs=settings["epochs"], lr=settings["lr"],
                                lr_milestones=tuple(settings["lr_milestones"]), batch_size=settings["batch_size"],
                                seed=settings["seed"], checkpoint=folder / "checkpoint.pt", device=device or "cpu",
                                progress=progress, exact=exact)
        return model.state_dict(), history

    state, _, history = _through_cache(folder, settings_key(settings), "model.safetensors", False, train)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
    return model.eval(), history


def ship_model(settings: dict, name: str, trained_on: str | None = None) -> str:
    """Copy the cached model of :func:`train_model` into ``weights/<name>`` in fp16 with its history and last test
    accuracy (maintainers' tool, :func:`interpretgan.zoo._ship`); returns the shipped path relative to the repository
    (what ``08_your_model``'s ``weights`` takes)."""
    from .zoo import _ship

    _ship("user-classifiers", settings, "model.safetensors", name, "train_model", torch.float16, with_accuracy=True,
          trained_on=trained_on)
    return str((paths.weights_dir() / name).relative_to(paths.REPO_ROOT))
