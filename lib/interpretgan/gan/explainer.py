"""A fitted explanation generator and what is done with one: :class:`Explainer` (``explainer(x)`` -> the
explanations of images ``x`` at its layer), the layer's latent of an input (:func:`latent_of`, for any
``nn.Module``: ``forward_to`` where the model has it, else a forward hook), its weights as a flat state dict
and back, and its accuracy by a judge.

Who should use it: everything that shows or scores explanations (04, 05, 07, :mod:`interpretgan.quality`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .. import fast
from ..attacks import predict
from ..models import eval_mode
from .networks import CompressionNet, Generator, resolution

if TYPE_CHECKING:  # the settings live with the fitting loop, which imports this module
    from .fit import GANSettings

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


def latent_and_logits(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s latent and the logits of images ``x``, from one forward pass (``forward_to`` then
    ``forward_from`` when the model has them, else a forward hook as in :func:`latent_of`)."""
    if hasattr(model, "forward_to") and hasattr(model, "forward_from"):
        latent = model.forward_to(x, layer)
        return latent, model.forward_from(latent, layer)
    return _hooked(model, x, layer)


class Explainer(nn.Module):
    """A fitted explanation generator for one layer: ``explainer(x)`` -> explanations in [0, 1] (full
    resolution, same shape as ``x``), computed by the EMA copies of C and G from f_pre(x).

    ``explain_latent(latent)`` does the same from a latent (e.g. one computed elsewhere). ``growing`` (a
    ``(scale, alpha)``; None, the default: the last scale) draws at a scale of the progressive generator,
    upsampled to full resolution: while a fit runs, its monitor and sample grids show the scale being
    trained, not the higher scales' untrained layers."""

    def __init__(self, classifier: nn.Module, layer: str, compression: CompressionNet, generator: Generator,
                 image_size: int | None = None):
        super().__init__()
        self.layer, self.compression, self.generator = layer, compression, generator
        self.image_size = image_size or resolution(generator.n_scales - 1, generator.base)  # the classifier's side
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
    """Generator output in [-1, 1] units at any resolution -> images in [0, 1] at ``size`` (nearest upsampling by
    whole factors, as the growing scales need; bilinear with antialiasing otherwise, e.g. 112 -> 100 px)."""
    if images.shape[-1] != size:
        whole = size % images.shape[-1] == 0
        images = F.interpolate(images, size=(size, size), mode="nearest") if whole else \
            F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((images + 1) / 2).clamp(0.0, 1.0)


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
                    device: str | torch.device | None = None, image_size: int | None = None) -> Explainer:
    """An :class:`Explainer` for ``layer`` of ``classifier`` with the weights ``state`` (from :func:`explainer_state`);
    ``image_size``: the classifier's side in pixels (default: the generator's, ``settings.image_size``)."""
    device = torch.device(device or next(classifier.parameters()).device)
    side = image_size or settings.image_size
    probe = torch.zeros(1, *state["generator.to_rgb.0.weight"].shape[:1], side, side, device=device)
    with torch.no_grad(), eval_mode(classifier):
        latent_shape = tuple(latent_of(classifier, probe, layer).shape[1:])
    C = CompressionNet(latent_shape, settings.code_dim, code_map=settings.code_map, map_side=settings.base)
    G = Generator(settings.code_dim, settings.channels, probe.shape[1], code_map=settings.code_map, base=settings.base)
    for mod, name in ((C, "compression"), (G, "generator")):
        mod.load_state_dict({k[len(name) + 1:]: v.float() for k, v in state.items() if k.startswith(name + ".")})
    return Explainer(classifier, layer, C.to(device).eval(), G.to(device).eval(), image_size=side)


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
