"""Fixtures shared by the library tests: the MNIST test split and a briefly trained classifier."""
import pytest
import torch

from interpretgan.data import mnist32
from interpretgan.models import SmallCNN
from interpretgan.training import train_natural


@pytest.fixture(scope="session")
def test_set():
    return mnist32("test")


@pytest.fixture(scope="session")
def train_set():
    return mnist32("train")


@pytest.fixture(scope="session")
def weak_model(train_set, test_set):
    """A SmallCNN after one epoch on 15,000 digits (about 90% accurate, not robust), in eval mode."""
    torch.manual_seed(0)
    model = SmallCNN(pooling="max")
    train_natural(model, train_set.subset(15_000), test_set.subset(500), epochs=1, lr=0.01, progress=False)
    model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    return model


class IdentityExplainer(torch.nn.Module):
    """An 'explainer' that returns its input: explanations equal the images (what a perfect one would score)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives it a device, as real explainers have

    def forward(self, x, exact=None):
        return x


@pytest.fixture
def identity_explainer():
    """The class :class:`IdentityExplainer` (call it for an explainer)."""
    return IdentityExplainer
