"""InterpretGAN for any input and any latent (issue 31 item 3): 1 or 3 channels, sides from 28 to 224 (the
generator's scales derived from the side), convolutional latents of any (C, H, W) and flat ones of any size,
non-square inputs refused. Tiny settings: these check shapes and invariants, not explanation quality."""
import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from interpretgan import gan
from interpretgan.data import ImageSet

TINY = gan.GANSettings(code_dim=16, channels=(8, 8, 8), batch_size=8, images=(16, 16, 32), ema=0.9,
                       checkpoint_every=10_000)


def lenet5() -> nn.Module:
    """LeCun's LeNet-5 for 1 x 28 x 28 digits (padding 2 on the first conv, average pooling)."""
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                         nn.Linear(84, 10))


def images(n: int, channels: int, side: int, classes: int, width: int | None = None) -> ImageSet:
    g = torch.Generator().manual_seed(side)
    x = torch.randint(0, 256, (n, channels, side, width or side), dtype=torch.uint8, generator=g)
    return ImageSet(x, torch.randint(0, classes, (n,), generator=g), torch.arange(n))


@pytest.mark.parametrize("side, expected", [(28, (7, 3)), (32, (4, 4)), (64, (4, 5)), (128, (4, 6)), (224, (7, 6)),
                                            (100, (7, 5)), (48, (6, 4)), (4, (4, 1))])
def test_scales_for_known_sides(side, expected):
    assert gan.scales_for(side) == expected
    base, n = expected
    assert base * 2 ** (n - 1) >= side and 4 <= base <= 7  # the last scale covers the side, no scale to spare
    assert base * 2 ** (n - 2) < side or n == 1


def test_scales_for_refuses_what_is_not_a_side():
    for bad in (3, 0, 28.0):
        with pytest.raises(ValueError, match="image side"):
            gan.scales_for(bad)


def test_for_side_keeps_fitting_settings_and_their_key():
    mnist = gan.GANSettings(channels=(64, 64, 32, 32), images=(3, 3, 9, 36))
    assert mnist.for_side(32) is mnist and "base" not in mnist.as_dict()  # the shipped keys do not move
    s28 = mnist.for_side(28)
    assert (s28.base, s28.channels, s28.images, s28.image_size) == (7, (64, 32, 32), (3, 9, 36), 28)
    assert s28.as_dict()["base"] == 7
    s224 = mnist.for_side(224)
    assert (s224.base, s224.channels, s224.images, s224.image_size) == (7, (64, 64, 64, 64, 32, 32),
                                                                         (3, 3, 3, 3, 9, 36), 224)
    assert mnist.for_side(100).image_size == 112


@pytest.mark.parametrize("base", [4, 5, 7])
@pytest.mark.parametrize("code_map", [False, True])
def test_generator_and_critic_at_any_first_scale(base, code_map):
    G = gan.Generator(16, (8, 8, 8), out_channels=3, code_map=code_map, base=base)
    D = gan.Discriminator((8, 8, 8), in_channels=3, base=base)
    code = torch.randn(4, 16, base, base) if code_map else torch.randn(4, 16)
    for scale in range(3):
        out = G(code, scale, alpha=0.5)
        assert out.shape == (4, 3, base * 2 ** scale, base * 2 ** scale)
        assert D(out, scale, alpha=0.5).shape == (4,)


@pytest.mark.parametrize("latent_shape", [(6, 28, 28), (16, 10, 10), (128, 12, 12), (512, 2, 2), (84,), (7,), (3, 5)])
@pytest.mark.parametrize("map_side", [4, 7])
def test_compression_net_maps_any_latent_to_the_generators_first_scale(latent_shape, map_side):
    C = gan.CompressionNet(latent_shape, 16, code_map=True, map_side=map_side)
    assert C(torch.randn(5, *latent_shape)).shape == (5, 16, map_side, map_side)
    assert gan.CompressionNet(latent_shape, 16)(torch.randn(5, *latent_shape)).shape == (5, 16)


def _fit(model, layer, data, settings):
    return gan.fit_layer(model.eval(), layer, data, settings, seed=0, progress=False, exact=True)


@pytest.mark.parametrize("layer", ["1", "4", "7", "11"])  # tanh of conv1 (6x28x28), conv2 (16x10x10), fc 120, logits
def test_lenet5_at_28_pixels(layer):
    torch.manual_seed(0)
    model, data = lenet5(), images(48, 1, 28, 10)
    settings = TINY.for_side(28)
    assert (settings.base, settings.image_size) == (7, 28)
    explainer, history = _fit(model, layer, data, settings)
    x = data.take(slice(0, 6)).tensors()[0]
    out = explainer(x, exact=True)
    assert out.shape == (6, 1, 28, 28) and 0 <= out.min() and out.max() <= 1
    assert all(torch.isfinite(torch.tensor(history["loss_d"])))
    rebuilt = gan.build_explainer(model, layer, settings, gan.explainer_state(explainer))
    torch.testing.assert_close(rebuilt(x, exact=True), out)


@pytest.mark.parametrize("layer, code_map", [("layer2", True), ("layer4", False), ("avgpool", True), ("fc", False)])
def test_torchvision_resnet18_at_64_pixels(layer, code_map):
    torch.manual_seed(0)
    model, data = torchvision.models.resnet18(num_classes=2), images(24, 3, 64, 2)
    settings = dataclasses.replace(TINY, code_map=code_map).for_side(64)
    assert (settings.base, len(settings.channels)) == (4, 5)
    explainer, _ = _fit(model, layer, data, dataclasses.replace(settings, images=(8, 8, 8, 8, 8)))
    out = explainer(data.take(slice(0, 3)).tensors()[0], exact=True)
    assert out.shape == (3, 3, 64, 64) and 0 <= out.min() and out.max() <= 1


def test_a_side_between_scales_is_drawn_larger_and_resized():
    """100 px: the generator draws 112 px (7 x 2**4), the critic sees the real images resized to each scale,
    the classifier sees the explanations at 100 px."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(36, 2))
    data = images(16, 3, 100, 2)
    settings = dataclasses.replace(TINY, channels=(8,) * 5, images=(8,) * 5).for_side(100)
    assert settings.image_size == 112
    explainer, _ = _fit(model, "1", data, settings)
    x = data.take(slice(0, 2)).tensors()[0]
    assert explainer(x, exact=True).shape == (2, 3, 100, 100)
    assert gan.real_images(x, 4, 1.0, base=7).shape == (2, 3, 112, 112)
    assert gan.real_images(x, 2, 1.0, base=7).shape == (2, 3, 28, 28)
    rebuilt = gan.build_explainer(model, "1", settings, gan.explainer_state(explainer), image_size=100)
    torch.testing.assert_close(rebuilt(x, exact=True), explainer(x, exact=True))


def test_non_square_images_and_mismatched_settings_are_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 1, 28, 32))
    with pytest.raises(ValueError, match="square images; these are 28 x 32 pixels"):
        _fit(model, "0", images(16, 1, 28, 2, width=32), TINY.for_side(28))
    model = lenet5()
    with pytest.raises(ValueError, match=r"draw 32 px images .* takes 28 px: use settings.for_side\(28\)"):
        _fit(model, "1", images(16, 1, 28, 10), dataclasses.replace(TINY, channels=(8,) * 4, images=(8,) * 4))
