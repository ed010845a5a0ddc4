"""The bench's FLOP counts (its 'fraction of peak' column rests on them) against a hand count."""
import pytest

from interpretgan.bench import step_flops
from interpretgan.models import SmallCNN

# Forward FLOPs of one 1x32x32 image (2 per multiply-add): conv1..conv4, fc1..fc3.
FORWARD = (2 * 1 * 9 * 32 * 30 * 30 + 2 * 32 * 9 * 32 * 28 * 28 + 2 * 32 * 9 * 64 * 12 * 12 + 2 * 64 * 9 * 64 * 10 * 10
           + 2 * 1600 * 200 + 2 * 200 * 200 + 2 * 200 * 10)


def test_attack_step_is_forward_plus_input_gradient():
    assert FORWARD == 28_374_304
    assert step_flops(SmallCNN(), train=False) == pytest.approx(2 * FORWARD)


def test_training_step_adds_the_weight_gradients():
    # forward + weight gradients (one forward's worth) + input gradients of every layer but conv1
    conv1 = 2 * 1 * 9 * 32 * 30 * 30
    assert step_flops(SmallCNN(), train=True) == pytest.approx(3 * FORWARD - conv1)


def test_dispatch_counter_matches_torch_flop_counter_and_counts_double_backward():
    import torch
    import torch.nn.functional as F

    from interpretgan.bench import _DispatchFlops

    model = SmallCNN()
    x, y = torch.rand(8, 1, 32, 32), torch.zeros(8, dtype=torch.long)
    with _DispatchFlops() as counter:
        F.cross_entropy(model(x), y).backward()
    assert counter.total / 8 == pytest.approx(step_flops(SmallCNN(), train=True))
    # a gradient penalty's double backward (which FlopCounterMode's module hooks refuse) is counted too
    lin = torch.nn.Linear(100, 1, bias=False)
    z = torch.rand(4, 100, requires_grad=True)
    with _DispatchFlops() as counter:
        (g,) = torch.autograd.grad(lin(z).sum(), [z], create_graph=True)
        g.pow(2).sum().backward()
    assert counter.total >= 2 * 4 * 100  # at least the forward matmul
