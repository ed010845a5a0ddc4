"""The classifier zoo: the paper's MNIST model, two CIFAR-10 models and the CelebA VGG16, each with a pooling switch
and split at any named layer.

Who should use it: anything that needs the classifier or its latents. ``SmallCNN(pooling="max")``
is the 4-conv + 3-FC network of the paper's refs [6, 7, 22] (TRADES' SmallCNN) for 1x32x32 input.
Its top-level children are exactly its named layers, in order::

    conv1  conv2  conv3  conv4  fc1  fc2  fc3

and each child's output is that layer's *latent*: the output after its activation, for conv2 and
conv4 after the 2x2/stride-2 pooling, and for fc3 the logits. So a forward hook on
``model.conv2`` sees the conv2 latent, ``model.forward_to(x, "conv2")`` computes it, and
``model.forward_from(latent, "conv2")`` finishes the classification from it. Every ReLU, pooling
and dropout is its own module object (Captum's DeepLift needs that).

The CIFAR-10 models (3x32x32 input) follow the same contract (:class:`NamedLayers`):

- :class:`VGG16` (``build("vgg16")``): named layers ``block1 .. block5  fc``.
- :class:`WideResNet` (``build("wrn34_10")`` is WRN-34-10): named layers
  ``conv1  block1  block2  block3  head``.

The CelebA gender model (3 x S x S faces, S = 64 or 128), :class:`FaceVGG16` (``build("face_vgg16")``):
named layers ``block1 .. block5  fc1  fc2  fc3``.

Example::

    >>> model = SmallCNN(pooling="avg")
    >>> pre, post = model.split("conv3")
    >>> logits = post(pre(torch.rand(8, 1, 32, 32)))   # same as model(x)
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pandas as pd
import torch
from torch import nn

POOLINGS = ("max", "avg")
LAYERS = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3")
ARCHS = ("smallcnn", "vgg16", "wrn34_10", "face_vgg16")
VGG16_LAYERS = ("block1", "block2", "block3", "block4", "block5", "fc")
WRN_LAYERS = ("conv1", "block1", "block2", "block3", "head")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode; its train/eval mode is restored afterwards, also on errors."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def as_found(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block, then give ``model`` back as it was found: every module's train/eval mode and every
    parameter's ``requires_grad`` restored (also on errors)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(q, q.requires_grad) for q in model.parameters()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for q, flag in grads:
            q.requires_grad_(flag)


def freeze(model: nn.Module) -> nn.Module:
    """``model`` with ``requires_grad`` off for every parameter (in place; returned)."""
    for q in model.parameters():
        q.requires_grad_(False)
    return model


def _pool(pooling: str) -> nn.Module:
    if pooling == "max":
        return nn.MaxPool2d(2, 2)
    if pooling == "avg":
        return nn.AvgPool2d(2, 2)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class NamedLayers(nn.Module):
    """A model whose top-level children are exactly ``layer_names``, run in that order.

    Subclasses set ``layer_names`` and create one child per name; each child's output is that
    layer's latent. This base provides ``forward``, ``forward_to``, ``forward_from`` and ``split``.
    """

    layer_names: tuple[str, ...] = ()

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


class SmallCNN(NamedLayers):
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


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU gain; zero bias), BN weight 1 and bias 0, linear bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


#: VGG16's 13 convolutions in five blocks (channels at width 1).
VGG16_CONFIG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _add_vgg_blocks(model: nn.Module, pooling: str, width: float) -> int:
    """Give ``model`` VGG16's five blocks ``block1`` .. ``block5`` (conv3x3 + BN + ReLU per convolution of
    :data:`VGG16_CONFIG`, channels x ``width``, each block closed by a 2x2/stride-2 pooling of the chosen kind)
    for 3-channel input; returns the last block's channel count."""
    c_in = 3
    for k, block in enumerate(VGG16_CONFIG, start=1):
        mods: list[nn.Module] = []
        for c in block:
            c_out = max(1, int(round(c * width)))
            mods += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        setattr(model, f"block{k}", nn.Sequential(*mods, _pool(pooling)))
    return c_in


class VGG16(NamedLayers):
    """CIFAR-10 VGG16 with batch norm: 13 x (conv3x3 + BN + ReLU) in five blocks, a 2x2/stride-2
    pooling closing each block, then one linear layer.

    Named layers (the top-level children, in order) and their latents for 3x32x32 input::

        block1  64 x 16 x 16     conv64  conv64  pool
        block2 128 x  8 x  8     conv128 conv128 pool
        block3 256 x  4 x  4     conv256 x 3     pool
        block4 512 x  2 x  2     conv512 x 3     pool
        block5 512 x  1 x  1     conv512 x 3     pool
        fc     num_classes       Flatten -> Linear(512 -> num_classes)   (the logits)

    (channel counts at ``width=1``). The head is the usual CIFAR one: after five poolings a 32x32
    input is 1x1, so a single ``Linear(512 * width, num_classes)`` classifies (no 4096-wide layers);
    other input sizes are not supported. Convolutions have a bias (as in the common CIFAR VGG), so
    the full-size model has 14,728,266 parameters for 10 classes.

    Arguments:
        pooling: "max" or "avg", the five 2x2/stride-2 poolings.
        num_classes: number of logits.
        width: multiplies every channel count (``max(1, round(c * width))``), e.g. 0.25 for a fast
            CPU version.
    """

    layer_names = VGG16_LAYERS

    def __init__(self, pooling: str = "max", num_classes: int = 10, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.pooling, self.width = pooling, width
        c_in = _add_vgg_blocks(self, pooling, width)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in, num_classes))
        _init_weights(self)


class FaceVGG16(NamedLayers):
    """VGG16 with batch norm for CelebA gender (the paper's Section 4 model): the same 13 convolutions
    in five blocks as :class:`VGG16`, each block closed by the pooling switch, then VGG's three fully
    connected layers.

    Named layers (the top-level children, in order) and their latents for 3 x S x S input (S = 128 at
    the paper profile, 64 at the default; widths at ``width=1``)::

        block1  64 x S/2  x S/2    conv64  conv64  pool
        block2 128 x S/4  x S/4    conv128 conv128 pool
        block3 256 x S/8  x S/8    conv256 x 3     pool
        block4 512 x S/16 x S/16   conv512 x 3     pool
        block5 512 x S/32 x S/32   conv512 x 3     pool
        fc1    hidden              Flatten -> Linear -> ReLU
        fc2    hidden              Dropout -> Linear -> ReLU
        fc3    num_classes         Dropout -> Linear (the logits)

    Arguments:
        pooling: "max" or "avg", the five 2x2/stride-2 poolings.
        image_size: S, a multiple of 32 (the flattened block5 latent is 512 * width * (S/32)^2).
        width: multiplies every convolution's channel count (0.25 for the default profile's CPU model).
        hidden: width of fc1 and fc2 (VGG's 4096 at the paper profile).
        num_classes: 2 (female, male); dropout: before fc2 and fc3 (VGG's 0.5).

    Shape: input (N, 3, S, S) in [0, 1]; output logits (N, num_classes).
    """

    layer_names = ("block1", "block2", "block3", "block4", "block5", "fc1", "fc2", "fc3")

    def __init__(self, pooling: str = "max", image_size: int = 64, width: float = 1.0, hidden: int = 4096,
                 num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.pooling, self.width, self.image_size = pooling, width, image_size
        c_in = _add_vgg_blocks(self, pooling, width)
        side = image_size // 32
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        _init_weights(self)


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block (as in TRADES' WideResNet)::

        o = ReLU(BN(x))
        out = conv3x3(o) [-> pool] -> BN -> ReLU -> Dropout -> conv3x3
        return out + (x  if the shape is kept  else  conv1x1(o) [-> pool])

    ``downsample`` is None (no change of resolution), "stride" (the usual WRN: the first conv and the
    shortcut conv have stride 2) or a pooling kind ("max" | "avg": both convs run with stride 1 and
    are each followed by their own 2x2/stride-2 pooling module). Module names: bn1 relu1 conv1 pool
    bn2 relu2 dropout conv2 shortcut (``pool`` and ``shortcut`` are None when not needed).
    """

    def __init__(self, c_in: int, c_out: int, downsample: str | None = None, dropout: float = 0.0):
        super().__init__()
        stride = 2 if downsample == "stride" else 1
        pooled = downsample not in (None, "stride")
        self.bn1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.pool = _pool(downsample) if pooled else None
        self.bn2, self.relu2 = nn.BatchNorm2d(c_out), nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = None
        if c_in != c_out or downsample is not None:
            conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.shortcut = nn.Sequential(conv, _pool(downsample)) if pooled else nn.Sequential(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        if self.pool is not None:
            out = self.pool(out)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + skip


class WideResNet(NamedLayers):
    """Wide ResNet (WRN-depth-k) for CIFAR-10 in the pre-activation form of TRADES / ATTA, with a
    pooling switch. ``WideResNet(34, 10)`` is WRN-34-10.

    Named layers (the top-level children, in order) and their latents for 3x32x32 input::

        conv1   16      x 32 x 32   conv3x3(3 -> 16), no activation (block1 applies BN-ReLU first)
        block1  16k     x 32 x 32   group 1: n wide basic blocks, no downsampling
        block2  32k     x 16 x 16   group 2: n blocks, the first downsamples by 2
        block3  64k     x  8 x  8   group 3: n blocks, the first downsamples by 2
        head    num_classes         BN -> ReLU -> global average pool -> Flatten -> Linear (logits)

    with n = (depth - 4) / 6 blocks per group (5 for depth 34) of :class:`WideBasicBlock`; the
    group latents are the residual sums (before the next pre-activation).

    The pooling switch. The usual WRN has no max pooling at all: groups 2 and 3 downsample with
    stride-2 convolutions in their first block (the 3x3 conv and the 1x1 shortcut conv), and the
    paper's question (does max pooling make a model vulnerable?) has no pooling to switch. Here the
    downsampling moves into an explicit 2x2/stride-2 pooling of the chosen kind: that block's first
    3x3 conv runs with stride 1 and is followed by the pooling, and its 1x1 shortcut conv runs with
    stride 1 and is followed by another pooling of the same kind (its own module object). So
    ``pooling`` decides how every downsampling step summarises a 2x2 window (max or average) rather
    than sampling one of its four positions; with "avg" the shortcut equals the stride-2 1x1 conv
    applied to the average-pooled input. The switch adds no parameters (the parameter count equals
    the usual WRN's: 46,160,474 for WRN-34-10 with 10 classes), but those two convs run at twice the
    resolution (4x their usual cost). The final global pooling stays an average: it is the
    classification head, not a downsampling layer, and is an ``AdaptiveAvgPool2d(1)`` (the usual
    8x8 average pool for 32x32 input), so it is never mistaken for a switched pooling.

    Arguments:
        depth: 6n + 4 (34 gives 5 blocks per group); widen_factor: k.
        pooling: "max" or "avg", the two downsampling poolings (see above).
        num_classes: number of logits; dropout: dropout probability between each block's two convs.
    """

    layer_names = WRN_LAYERS

    def __init__(self, depth: int = 34, widen_factor: int = 10, pooling: str = "max",
                 num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 10, 16, 28, 34), got {depth}")
        _pool(pooling)  # check the switch before building anything
        self.pooling, self.depth, self.widen_factor = pooling, depth, widen_factor
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False))
        for g in range(3):
            down = pooling if g > 0 else None
            blocks = [WideBasicBlock(widths[g] if b == 0 else widths[g + 1], widths[g + 1],
                                     down if b == 0 else None, dropout) for b in range(n)]
            setattr(self, f"block{g + 1}", nn.Sequential(*blocks))
        self.head = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(widths[3], num_classes))
        _init_weights(self)


class _Judge(nn.Module):
    """A judge is a ``body`` (images in [0, 1] -> penultimate features) and a linear ``head`` (-> logits)."""

    body: nn.Module
    head: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations for images ``x`` in [0, 1] (the judge's Fréchet feature space)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class JudgeCNN(_Judge):
    """An independent MNIST classifier to judge explanations (LeNet-5 in Caffe's form, for 32x32 input):
    conv5x5(20)-ReLU-maxpool-conv5x5(50)-ReLU-maxpool-FC(500)-ReLU-FC(10).

    A different architecture from :class:`SmallCNN`, trained separately with another seed, never seen by
    an explanation generator: it scores whether explanations look like the digits they explain
    (``explanation_accuracy_independent``), and its 500-d penultimate ``features`` are the feature space
    of the Fréchet distance between explanations and real digits. With ``in_channels=3`` and
    ``image_size=64`` the same layers judge CelebA faces; ``downsample=2`` average-pools 64 px faces to 32 px
    first (the FC layer then takes 50 x 5 x 5 inputs, 0.6 M weights, against 4.2 M at 64 px).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 32, downsample: int = 1):
        super().__init__()
        pool = _downsampled(downsample)
        side = ((image_size // downsample - 4) // 2 - 4) // 2  # 5 at 32x32 (MNIST), 13 at 64x64
        self.body = nn.Sequential(*pool, nn.Conv2d(in_channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(50 * side * side, 500), nn.ReLU())
        self.head = nn.Linear(500, num_classes)


def _downsampled(factor: int) -> list[nn.Module]:
    """``[AvgPool2d(factor)]`` where ``factor`` > 1 (a judge that reads faces at a lower resolution), else ``[]``."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"downsample must be a whole number >= 1, got {factor!r}")
    return [nn.AvgPool2d(int(factor))] if factor > 1 else []



class JudgeMLP(_Judge):
    """An independent MNIST judge without convolutions: 1024-800-800-10 with ReLU (the classic MNIST MLP,
    here on 32x32 images). It has no spatial prior at all, so it reads shapes as pixel patterns; its
    800-d penultimate ``features`` are one of the panel's Fréchet feature spaces. For faces (CelebA's panel):
    ``in_channels=3``, ``image_size=64``, ``downsample=2`` (faces average-pooled to 32 px) and ``hidden=256``
    (3,072-256-256-2: 0.85 M weights)."""

    def __init__(self, num_classes: int = 10, image_size: int = 32, in_channels: int = 1, hidden: int = 800,
                 downsample: int = 1):
        super().__init__()
        pool = _downsampled(downsample)
        side = image_size // downsample
        self.body = nn.Sequential(*pool, nn.Flatten(), nn.Linear(in_channels * side * side, hidden),
                                  nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)



class _Residual(nn.Module):
    """x + conv-BN-GELU-conv-BN(x), then GELU."""

    def __init__(self, c: int):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.GELU(),
                                    nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.out = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.branch(x))


class JudgeResNet(_Judge):
    """An independent MNIST judge of another family than the paper's SmallCNN: a small residual network
    with batch norm, GELU, average pooling and global average pooling (no ReLU, no max pooling):
    stem 3x3 conv 32 at 32x32, avg-pool; residual block 32 at 16x16; 3x3 conv 64, avg-pool; residual
    block 64 at 8x8; global average pool; FC 10. Its 64-d pooled ``features`` are a Fréchet feature
    space. Trained naturally it is the panel's ``resnet``; trained with ATTA-1 + TRADES, ``robust``.
    With ``in_channels=3`` and 2 classes it is the CelebA gender judge (the same layers at 64x64)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.GELU(), nn.AvgPool2d(2),
            _Residual(32),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.GELU(), nn.AvgPool2d(2),
            _Residual(64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, num_classes)



#: The judges' architectures by name (the panel of :func:`interpretgan.zoo.judges`).
JUDGE_ARCHS = {"lenet": JudgeCNN, "mlp": JudgeMLP, "resnet": JudgeResNet}


def build(arch: str = "smallcnn", pooling: str = "max", **kwargs) -> nn.Module:
    """A model of the zoo by name: ``smallcnn`` (the paper's MNIST model), ``vgg16`` (CIFAR-10 VGG16-BN),
    ``wrn34_10`` (CIFAR-10 WRN-34-10), ``face_vgg16`` (CelebA gender VGG16-BN) or ``wrn`` (a WideResNet; pass ``depth`` and ``widen_factor``).
    Other keyword arguments go to the model's constructor."""
    if arch == "smallcnn":
        return SmallCNN(pooling=pooling, **kwargs)
    if arch == "vgg16":
        return VGG16(pooling=pooling, **kwargs)
    if arch == "wrn34_10":
        return WideResNet(depth=34, widen_factor=10, pooling=pooling, **kwargs)
    if arch == "face_vgg16":
        return FaceVGG16(pooling=pooling, **kwargs)
    if arch == "wrn":
        if "depth" not in kwargs or "widen_factor" not in kwargs:
            raise ValueError("arch 'wrn' needs explicit depth and widen_factor keyword arguments")
        return WideResNet(pooling=pooling, **kwargs)
    raise ValueError(f"arch must be one of {list(ARCHS) + ['wrn']}, got {arch!r}")


def latent_shapes(model: nn.Module, input_shape: tuple[int, ...] = (1, 32, 32)) -> dict[str, tuple[int, ...]]:
    """Shape (without the batch) of each named layer's latent for one input of ``input_shape``
    (e.g. (3, 32, 32) for the CIFAR-10 models). Runs in eval mode, so batch-norm statistics are
    neither used from the batch nor updated; the model's mode is restored afterwards."""
    shapes, x = {}, torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with eval_mode(model), torch.no_grad():
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
