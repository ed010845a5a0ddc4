"""The paper's baseline explanations (its Figure 3): Captum's attribution methods.

Who should use it: ``04_visualize``, to show pixel attributions beside InterpretGAN's explanations.
Every method is Captum's own implementation (never re-written here), called with the settings below,
on the classifier in eval mode and plain fp32 (attribution maps must not depend on the fast path):

- ``DeepLift`` (zero baseline; needs every ReLU / pooling to be its own module object, which our models
  guarantee), ``Saliency`` (absolute input gradient), ``InputXGradient``, ``IntegratedGradients``
  (zero baseline, 50 steps), ``Occlusion`` (4x4 windows, stride 2, replaced by zeros).

All attribute the class ``target`` (default: the model's prediction). Returns maps of the input's
shape (N, C, H, W), in the method's own units (not normalised).
"""
from __future__ import annotations

import warnings

import captum.attr as ca
import torch
from torch import nn

from .models import eval_mode

METHODS = ("DeepLift", "Saliency", "InputXGradient", "IntegratedGradients", "Occlusion")


def attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                 methods: tuple[str, ...] = METHODS) -> dict[str, torch.Tensor]:
    """Captum attributions of ``model``'s logit ``target`` (default: its prediction) for images ``x``
    (N, C, H, W in [0, 1]): method name -> map of the same shape (detached, on ``x``'s device)."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {list(METHODS)}, got {bad}")
    x = x.detach().contiguous().float()
    with eval_mode(model), warnings.catch_warnings():
        # Captum warns that DeepLift sets hooks on non-linear modules: ours are each used once (tested)
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
        with torch.no_grad():
            target = model(x).argmax(1) if target is None else target
        out = {}
        for name in methods:
            inp = x.clone().requires_grad_(True)
            if name == "DeepLift":
                a = ca.DeepLift(model).attribute(inp, baselines=torch.zeros_like(x), target=target)
            elif name == "Saliency":
                a = ca.Saliency(model).attribute(inp, target=target, abs=True)
            elif name == "InputXGradient":
                a = ca.InputXGradient(model).attribute(inp, target=target)
            elif name == "IntegratedGradients":
                a = ca.IntegratedGradients(model).attribute(inp, baselines=torch.zeros_like(x), target=target,
                                                            n_steps=50)
            else:
                c = x.shape[1]
                a = ca.Occlusion(model).attribute(inp, sliding_window_shapes=(c, 4, 4), strides=(c, 2, 2),
                                                  baselines=0.0, target=target)
            out[name] = a.detach()
    return out
