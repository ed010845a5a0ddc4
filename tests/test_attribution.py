"""Captum baselines: the right methods, called correctly (checked against their defining identities)."""
import pytest
import torch

from interpretgan.attribution import METHODS, attributions
from interpretgan.models import SmallCNN


def _model(pooling):
    torch.manual_seed(0)
    m = SmallCNN(pooling=pooling, dropout=0.0).eval()
    torch.nn.init.normal_(m.fc3[0].weight, std=0.1)
    return m


def test_identities_of_each_method(test_set):
    model = _model("avg")
    x, _ = test_set.subset(4).tensors()
    target = torch.tensor([3, 1, 4, 1])
    a = attributions(model, x, target)
    assert set(a) == set(METHODS) and all(v.shape == x.shape for v in a.values())
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), [xg])
    torch.testing.assert_close(a["Saliency"], grad.abs())
    torch.testing.assert_close(a["InputXGradient"], x * grad)
    gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    # completeness: DeepLift (exact through average pooling) and IG (up to its Riemann sum)
    torch.testing.assert_close(a["DeepLift"].flatten(1).sum(1), gap, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(a["IntegratedGradients"].flatten(1).sum(1), gap, rtol=0.05, atol=0.02)
    # occlusion of a window that is already zero changes nothing: its attribution there is zero
    blank = torch.zeros(1, 1, 32, 32)
    assert attributions(model, blank, torch.tensor([0]), ("Occlusion",))["Occlusion"].abs().max() == 0


def test_default_target_is_the_prediction_and_bad_method_is_refused(test_set):
    model = _model("max")
    x, _ = test_set.subset(2).tensors()
    pred = model(x).argmax(1)
    torch.testing.assert_close(attributions(model, x, methods=("Saliency",))["Saliency"],
                               attributions(model, x, pred, ("Saliency",))["Saliency"])
    with pytest.raises(ValueError, match="DeepLift"):
        attributions(model, x, methods=("GradCAM",))
