"""A model the package's zoo does not have, for 08_your_model: LeCun et al.'s LeNet-5 (1998) for 28 x 28 digits,
as people write it in PyTorch today (ReLU activations and max pooling in place of the original's scaled tanh and
trainable subsampling, a padding of 2 on the first convolution instead of 32 x 32 inputs).

Any file like this one works: a function that returns an ``nn.Module`` mapping images in [0, 1] to logits.
"""
from torch import nn


def lenet5(pooling: str = "max") -> nn.Module:
    """LeNet-5: conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> FC 120 -> FC 84 -> FC 10, ReLU after each
    but the last. Input (N, 1, 28, 28) in [0, 1]; output logits (N, 10)."""
    pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), pool(2),   # 6 x 14 x 14
        nn.Conv2d(6, 16, 5), nn.ReLU(), pool(2),             # 16 x 5 x 5
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))
