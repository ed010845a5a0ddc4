"""DiffAugment for the critic: each policy by hand, gradients kept, real and generated images treated alike."""
import pytest
import torch

from interpretgan import augment, gan


def test_translation_shifts_whole_pixels_and_fills_black():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    out = augment.translate(x)
    assert out.shape == x.shape
    for k in range(len(x)):  # each image is x shifted by (dy, dx) in [-2, 2], black (-1) where nothing came in
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = torch.full_like(x[k], -1.0)
                src = x[k][:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                want[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)] = src
                found |= torch.equal(out[k], want)
        assert found
    assert augment.translate(torch.zeros(2, 1, 4, 4), ratio=0.1).equal(torch.zeros(2, 1, 4, 4))  # < half a pixel


def test_cutout_zeroes_one_square_of_half_the_side():
    torch.manual_seed(1)
    x = torch.ones(200, 3, 8, 8)
    out = augment.cutout(x)
    zeroed = (out == 0).all(dim=1)  # the same pixels in every channel
    assert ((out == 0) | (out == 1)).all()
    for z in zeroed:
        rows, cols = torch.nonzero(z.any(1)).flatten(), torch.nonzero(z.any(0)).flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert int(z.sum()) == len(rows) * len(cols)  # one rectangle, clipped at the border
    # the square's top row is uniform in -2..6, so it covers 2,3,4,4,4,4,4,3,2 of the 8 rows: 30/9 on average
    assert float(zeroed.float().mean()) == pytest.approx((30 / 9 / 8) ** 2, abs=0.02)


def test_color_keeps_a_grey_image_grey_and_moves_brightness():
    torch.manual_seed(2)
    x = torch.rand(500, 1, 4, 4) * 0 + 0.2
    out = augment.color(x)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))  # constant images stay constant
    shift = out[:, 0, 0, 0] - 0.2
    assert shift.min() >= -0.5 and shift.max() <= 0.5 and shift.std() > 0.2


def test_augmentation_keeps_gradients_and_is_applied_to_real_and_fake(monkeypatch):
    x = torch.rand(8, 3, 8, 8, requires_grad=True)
    out = augment.diff_augment(x * 2 - 1, ("color", "translation", "cutout"))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert augment.diff_augment(x, ()) is x
    # in a critic step both batches go through the augmentation, with the generator's graph intact
    seen = []
    monkeypatch.setattr(gan.fit, "diff_augment", lambda t, p: seen.append((t.requires_grad, p)) or t)
    settings = gan.GANSettings(code_dim=8, channels=(8, 8), images=(32, 32), batch_size=8, augment=("cutout",))
    nets = gan.fit._build_nets((10,), 1, settings, torch.device("cpu"), exact=True)
    real = torch.rand(8, 1, 8, 8) * 2 - 1
    fake = nets.G(nets.C(torch.randn(8, 10)), 1)
    gan.critic_step(nets, real, fake, 1, 1.0, settings, 0, exact=True)
    assert [p for _, p in seen] == [("cutout",), ("cutout",)]
    assert seen[1][0] is False  # the critic's update detaches the fake
    seen.clear()
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    target = torch.full((8, 10), 0.1)
    gan.generator_step(nets, classifier, fake, target, real, 1, 1.0, settings, exact=True)
    assert seen == [(True, ("cutout",))]  # the generator's loss flows through the augmentation


def test_unknown_policy_is_refused_by_name():
    with pytest.raises(ValueError, match="'blur'"):
        gan.GANSettings(augment=("translation", "blur"))
    assert gan.GANSettings(augment=["cutout"]).augment == ("cutout",)
