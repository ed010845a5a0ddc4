"""The classifier zoo: the paper's MNIST model with a pooling switch, split at any named layer.

Who should use it: anything that needs the classifier or its latents. ``SmallCNN(pooling="max")``
is the 4-conv + 3-FC network of the paper's refs [6, 7, 22] (TRADES' SmallCNN) for 1x32x32 input.
Its top-level children are exactly its named layers, in order::

    conv1  conv2  conv3  conv4  fc1  fc2  fc3

and each child's output is that layer's *latent*: the output after its activation, for conv2 and
conv4 after the 2x2/stride-2 pooling, and for fc3 the logits. So a forward hook on
``model.conv2`` sees the conv2 latent, ``model.forward_to(x, "conv2")`` computes it, and
``model.forward_from(latent, "conv2")`` finishes the classification from it. Every ReLU, pooling
and dropout is its own module object (Captum's DeepLift needs that).

Example::

    >>> model = SmallCNN(pooling="avg")
    >>> pre, post = model.split("conv3")
    >>> logits = post(pre(torch.rand(8, 1, 32, 32)))   # same as model(x)
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

POOLINGS = ("max", "avg")
LAYERS = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3")


def _pool(pooling: str) -> nn.Module:
    if pooling == "max":
        return nn.MaxPool2d(2, 2)
    if pooling == "avg":
        return nn.AvgPool2d(2, 2)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class SmallCNN(nn.Module):
    """MNIST classifier: conv(32)-conv(32)-pool-conv(64)-conv(64)-pool-fc(200)-fc(200)-fc(10).

    Arguments:
        pooling: "max" (the paper's) or "avg" (its proposed fix), 2x2 with stride 2 after conv2, conv4.
        in_channels, image_size, num_classes: input and output shape (1, 32, 10 for the paper's MNIST).
        dropout: dropout probability after fc1's activation (TRADES uses 0.5; 0 turns it off).

    Shape: input (N, in_channels, image_size, image_size) in [0, 1]; output logits (N, num_classes).
    """

    layer_names = LAYERS

    def __init__(self, pooling: str = "max", in_channels: int = 1, image_size: int = 32,
                 num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        self.pooling = pooling
        side = ((image_size - 4) // 2 - 4) // 2  # two valid 3x3 convs, pool, two convs, pool
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3), nn.ReLU(), _pool(pooling))
        self.conv3 = nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU())
        self.conv4 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU(), _pool(pooling))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Dropout(dropout), nn.Linear(200, 200), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Linear(200, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc3[0].weight)
        nn.init.zeros_(self.fc3[0].bias)

    def _index(self, layer: str) -> int:
        if layer not in self.layer_names:
            raise ValueError(f"layer must be one of {list(self.layer_names)}, got {layer!r}")
        return self.layer_names.index(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    def forward_to(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The latent of ``layer`` for images ``x`` (f_pre in the paper)."""
        for name in self.layer_names[: self._index(layer) + 1]:
            x = getattr(self, name)(x)
        return x

    def forward_from(self, latent: torch.Tensor, layer: str) -> torch.Tensor:
        """Logits from the latent of ``layer`` (f_post in the paper)."""
        for name in self.layer_names[self._index(layer) + 1:]:
            latent = getattr(self, name)(latent)
        return latent

    def split(self, layer: str) -> tuple[nn.Sequential, nn.Sequential]:
        """``(f_pre, f_post)`` as two Sequentials sharing this model's modules: f = f_post o f_pre."""
        k = self._index(layer) + 1
        names = self.layer_names
        return (nn.Sequential(*[getattr(self, n) for n in names[:k]]),
                nn.Sequential(*[getattr(self, n) for n in names[k:]]))


def build(arch: str = "smallcnn", pooling: str = "max", **kwargs) -> nn.Module:
    """A model of the zoo by name (for now ``smallcnn``, the paper's MNIST model)."""
    if arch == "smallcnn":
        return SmallCNN(pooling=pooling, **kwargs)
    raise ValueError(f"arch must be one of ['smallcnn'], got {arch!r}")


def latent_shapes(model: nn.Module, input_shape: tuple[int, ...] = (1, 32, 32)) -> dict[str, tuple[int, ...]]:
    """Shape (without the batch) of each named layer's latent for one input of ``input_shape``."""
    shapes, x = {}, torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        for name in model.layer_names:
            x = getattr(model, name)(x)
            shapes[name] = tuple(x.shape[1:])
    return shapes


def describe(model: nn.Module, input_shape: tuple[int, ...] = (1, 32, 32)) -> pd.DataFrame:
    """One row per named layer: its modules, latent shape, latent size and parameter count."""
    rows = []
    for name, shape in latent_shapes(model, input_shape).items():
        block = getattr(model, name)
        ops = " -> ".join(type(m).__name__ for m in block)
        rows.append({"layer": name, "modules": ops, "latent shape": "x".join(map(str, shape)),
                     "latent size": int(torch.tensor(shape).prod()),
                     "parameters": sum(p.numel() for p in block.parameters())})
    return pd.DataFrame(rows).set_index("layer")
