"""InterpretGAN's losses: the interpretability term L_I (equation 3), the latent-matching term (beyond the
paper), and WGAN-GP's gradient penalty with its (lazy) weight.

Who should read it: anyone asking what the generator is trained to do; :mod:`interpretgan.gan.fit` calls them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import fast
from .explainer import latent_and_logits
from .networks import Discriminator

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


def penalty_weight(settings, step: int) -> float:
    """The gradient penalty's weight at critic step ``step`` (0-based): ``gp_weight * gp_every`` on every
    ``gp_every``-th step, 0 (penalty not computed) on the others."""
    return settings.gp_weight * settings.gp_every if step % settings.gp_every == 0 else 0.0
