import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretgan.models import LAYERS, SmallCNN, describe, latent_shapes

SHAPES = {"conv1": (32, 30, 30), "conv2": (32, 14, 14), "conv3": (64, 12, 12), "conv4": (64, 5, 5),
          "fc1": (200,), "fc2": (200,), "fc3": (10,)}


@pytest.fixture(params=["max", "avg"])
def model(request):
    torch.manual_seed(0)
    m = SmallCNN(pooling=request.param).eval()
    torch.nn.init.normal_(m.fc3[0].weight, std=0.1)  # fc3 starts at zero; give it weights so outputs differ
    return m


def test_named_layers_are_the_top_level_children_in_order(model):
    assert [n for n, _ in model.named_children()] == list(LAYERS) == list(model.layer_names)


def test_latent_shapes_of_the_paper_model(model):
    assert latent_shapes(model) == SHAPES
    assert describe(model)["latent size"].tolist() == [28800, 6272, 9216, 1600, 200, 200, 10]
    assert sum(q.numel() for q in model.parameters()) == 427_402


@pytest.mark.parametrize("layer", LAYERS)
def test_split_at_every_layer_composes_to_the_model(model, layer):
    x = torch.rand(5, 1, 32, 32)
    pre, post = model.split(layer)
    latent = model.forward_to(x, layer)
    assert latent.shape[1:] == SHAPES[layer]
    torch.testing.assert_close(pre(x), latent)
    torch.testing.assert_close(post(latent), model(x))
    torch.testing.assert_close(model.forward_from(latent, layer), model(x))


def test_latent_is_after_activation_and_pooling(model):
    x = torch.rand(4, 1, 32, 32)
    conv = model.conv2[0](model.conv1(x))
    pool = F.max_pool2d if model.pooling == "max" else F.avg_pool2d
    torch.testing.assert_close(model.forward_to(x, "conv2"), pool(F.relu(conv), 2, 2))
    assert (model.forward_to(x, "fc1") >= 0).all()
    seen = {}
    model.conv4.register_forward_hook(lambda m, i, o: seen.setdefault("conv4", o))
    model(x)
    torch.testing.assert_close(seen["conv4"], model.forward_to(x, "conv4"))


def test_fc3_latent_is_the_logits(model):
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(model.forward_to(x, "fc3"), model(x))


def test_no_module_object_is_used_twice():
    m = SmallCNN()
    leaves = [mod for mod in m.modules() if not list(mod.children())]
    assert len({id(mod) for mod in leaves}) == len(leaves) == 17
    assert sum(isinstance(mod, nn.ReLU) for mod in leaves) == 6


def test_pooling_switch_changes_only_the_pooling():
    a, b = SmallCNN("max"), SmallCNN("avg")
    assert isinstance(a.conv2[2], nn.MaxPool2d) and isinstance(b.conv4[2], nn.AvgPool2d)
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(ValueError, match=r"pooling must be one of \('max', 'avg'\)"):
        SmallCNN("median")
    with pytest.raises(ValueError, match="layer must be one of"):
        a.forward_to(torch.rand(1, 1, 32, 32), "conv5")


def test_captum_deeplift_completeness(model):
    """DeepLift's attributions sum to f(x) - f(baseline) (its completeness property): this holds
    only when no ReLU/pooling module is reused, the reason for the model's construction."""
    from captum.attr import DeepLift

    x = torch.rand(4, 1, 32, 32)
    base = torch.zeros_like(x)
    target = model(x).argmax(1)
    attr, delta = DeepLift(model).attribute(x, base, target=target, return_convergence_delta=True)
    assert attr.shape == x.shape
    assert float(delta.abs().max()) < 1e-3


# ----------------------------------------------------------------------------------------------
# CIFAR-10 models: VGG16 (narrow, width 0.25) and a small WideResNet (WRN-10-1) for speed.

from interpretgan.models import ARCHS, VGG16, WideBasicBlock, WideResNet, build  # noqa: E402

CIFAR_SHAPES = {
    "vgg16": {"block1": (16, 16, 16), "block2": (32, 8, 8), "block3": (64, 4, 4), "block4": (128, 2, 2),
              "block5": (128, 1, 1), "fc": (10,)},
    "wrn": {"conv1": (16, 32, 32), "block1": (16, 32, 32), "block2": (32, 16, 16), "block3": (64, 8, 8),
            "head": (10,)},
}
# switched poolings: VGG16 one per block; WRN one after the first conv and one in the shortcut of
# the first block of groups 2 and 3
N_POOLS = {"vgg16": 5, "wrn": 4}


def _small(arch, pooling):
    torch.manual_seed(0)
    m = VGG16(pooling, width=0.25) if arch == "vgg16" else WideResNet(10, 1, pooling)
    # random BN statistics and affine parameters, so that eval-mode BN is not the identity
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.2, 0.2)
    return m.eval()


def _leaves(m):
    """Every leaf module occurrence, duplicates kept (``modules()`` alone would hide a reused one)."""
    return [mod for _, mod in m.named_modules(remove_duplicate=False) if not list(mod.children())]


@pytest.fixture(params=[(a, p) for a in ("vgg16", "wrn") for p in ("max", "avg")], ids=lambda t: "-".join(t))
def cifar_model(request):
    arch, pooling = request.param
    return arch, _small(arch, pooling)


def test_cifar_named_layers_are_the_top_level_children_in_order(cifar_model):
    arch, m = cifar_model
    want = ["block1", "block2", "block3", "block4", "block5", "fc"] if arch == "vgg16" else \
        ["conv1", "block1", "block2", "block3", "head"]
    assert [n for n, _ in m.named_children()] == want == list(m.layer_names)


def test_cifar_latent_shapes(cifar_model):
    arch, m = cifar_model
    m.train()
    assert latent_shapes(m, (3, 32, 32)) == CIFAR_SHAPES[arch]
    assert m.training  # latent_shapes restores the mode
    sizes = describe(m, (3, 32, 32))["latent size"].tolist()
    assert sizes == [int(torch.tensor(s).prod()) for s in CIFAR_SHAPES[arch].values()]


def test_cifar_split_at_every_layer_composes_to_the_model(cifar_model):
    arch, m = cifar_model
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _check_split(m, arch, x)
    with pytest.raises(ValueError, match="layer must be one of"):
        m.forward_to(x, "conv99")


def _check_split(m, arch, x):
    y = m(x)
    assert y.shape == (2, 10) and float(y.std()) > 0
    for layer in m.layer_names:
        pre, post = m.split(layer)
        latent = m.forward_to(x, layer)
        assert latent.shape[1:] == CIFAR_SHAPES[arch][layer]
        torch.testing.assert_close(pre(x), latent)
        torch.testing.assert_close(post(latent), y)
        torch.testing.assert_close(m.forward_from(latent, layer), y)


def test_cifar_pooling_switch_and_no_reused_module(cifar_model):
    arch, m = cifar_model
    leaves = _leaves(m)
    assert len({id(mod) for mod in leaves}) == len(leaves)
    kind, other = (nn.MaxPool2d, nn.AvgPool2d) if m.pooling == "max" else (nn.AvgPool2d, nn.MaxPool2d)
    assert sum(isinstance(mod, kind) for mod in leaves) == N_POOLS[arch]
    assert not any(isinstance(mod, other) for mod in leaves)
    n_relu = 13 if arch == "vgg16" else 2 * 3 + 1  # VGG: one per conv; WRN-10: two per block + head
    assert sum(isinstance(mod, nn.ReLU) for mod in leaves) == n_relu
    if arch == "vgg16":
        assert all(isinstance(getattr(m, f"block{k}")[-1], kind) for k in range(1, 6))
    else:  # the head's global pooling is an average whatever the switch
        assert isinstance(m.head[2], nn.AdaptiveAvgPool2d)


def test_cifar_models_same_parameters_for_both_poolings():
    for make in (lambda p: VGG16(p, width=0.25), lambda p: WideResNet(10, 2, p)):
        a, b = make("max"), make("avg")
        assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match=r"pooling must be one of \('max', 'avg'\)"):
        WideResNet(10, 1, "median")
    with pytest.raises(ValueError, match="depth must be 6n"):
        WideResNet(12, 1)


def test_wrn_downsampling_block_is_conv_then_pool(cifar_model):
    """The first block of group 2 by hand: o = relu(bn1 x); pool(conv1 o) -> bn2 -> relu -> conv2,
    plus pool(conv1x1 o): the stride of the usual WRN is replaced by a pooling after each conv."""
    arch, m = cifar_model
    if arch != "wrn":
        pytest.skip("WideResNet only")
    blk = m.block2[0]
    pool = F.max_pool2d if m.pooling == "max" else F.avg_pool2d
    x = torch.randn(2, 16, 32, 32)
    o = F.relu(blk.bn1(x))
    main = F.conv2d(F.relu(blk.bn2(pool(F.conv2d(o, blk.conv1.weight, padding=1), 2, 2))),
                    blk.conv2.weight, padding=1)
    skip = pool(F.conv2d(o, blk.shortcut[0].weight), 2, 2)
    torch.testing.assert_close(blk(x), main + skip)
    assert blk.conv1.stride == (1, 1) and blk.shortcut[0].stride == (1, 1)
    assert m.block1[0].pool is None and m.block1[0].shortcut is None  # 16 -> 16 at k=1: identity skip


def test_wrn_stride_block_matches_the_usual_wrn():
    """WideBasicBlock(downsample="stride") is the usual stride-2 block; with avg pooling the pooled
    shortcut equals the strided 1x1 conv on the average-pooled input (avg pool and 1x1 conv commute)."""
    torch.manual_seed(0)
    usual, pooled = WideBasicBlock(8, 16, "stride").eval(), WideBasicBlock(8, 16, "avg").eval()
    pooled.load_state_dict(usual.state_dict())
    x = torch.randn(2, 8, 16, 16)
    o = F.relu(usual.bn1(x))
    torch.testing.assert_close(usual.shortcut(o), F.conv2d(o, usual.shortcut[0].weight, stride=2))
    torch.testing.assert_close(pooled.shortcut(o), F.conv2d(F.avg_pool2d(o, 2, 2), usual.shortcut[0].weight))
    assert usual(x).shape == pooled(x).shape == (2, 16, 8, 8)


def test_cifar_deeplift_completeness(cifar_model):
    """DeepLift's attributions sum to f(x) - f(0); a reused ReLU/pooling module would break it.
    Fresh weights (BN at its identity init, no biases before BN), so the zero baseline's activations
    are zero: Captum's max-pool rule is not exactly complete when the baseline's activations are
    nonzero (measured: delta 0.0066 against f(x) - f(0) = 0.011 on VGG16-max with random BN
    statistics), which is Captum's limitation, not the model's."""
    from captum.attr import DeepLift

    arch, m = cifar_model
    torch.manual_seed(0)
    m = (VGG16(m.pooling, width=0.25) if arch == "vgg16" else WideResNet(10, 1, m.pooling)).eval()
    x = torch.rand(2, 3, 32, 32)
    base = torch.zeros_like(x)
    target = m(x).argmax(1)
    attr, delta = DeepLift(m).attribute(x, base, target=target, return_convergence_delta=True)
    gap = (m(x) - m(base)).gather(1, target[:, None]).detach()
    assert attr.shape == x.shape and float(gap.abs().min()) > 1e-3
    assert float(delta.abs().max()) < 1e-4 * max(1.0, float(gap.abs().max()))


def _n_params(m):
    return sum(q.numel() for q in m.parameters())


def test_full_size_vgg16_parameter_count():
    # 13 convs 3x3 (weights 9 * c_in * c_out, plus c_out biases), BN (2 * c_out), Linear(512 -> 10):
    # weights 9 * (3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 2*256*256 + 256*512 + 5*512*512)
    #       = 9 * 1,634,496 = 14,710,464
    # conv biases = 64+64+128+128+3*256+6*512 = 4,224; BN weight+bias = 2 * 4,224 = 8,448
    # linear = 512*10 + 10 = 5,130; total = 14,710,464 + 4,224 + 8,448 + 5,130 = 14,728,266
    for pooling in ("max", "avg"):
        assert _n_params(VGG16(pooling)) == 14_728_266
    assert _n_params(VGG16(width=0.25)) == _n_params(build("vgg16", "avg", width=0.25))


def _usual_wrn_parameter_count(depth, k, num_classes=10):
    """The usual stride-2 pre-activation WRN counted by hand: biasless convs, BN weight+bias,
    1x1 shortcut conv where the channel count changes, final BN and Linear."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = 9 * 3 * widths[0]  # conv1
    for c_in, c in zip(widths[:-1], widths[1:]):
        total += 2 * c_in + 9 * c_in * c + 2 * c + 9 * c * c + c_in * c  # first block, with shortcut
        total += (n - 1) * (2 * c + 9 * c * c + 2 * c + 9 * c * c)
    return total + 2 * widths[3] + widths[3] * num_classes + num_classes


def test_full_size_wrn34_10_parameter_count():
    assert _usual_wrn_parameter_count(34, 10) == 46_160_474  # the known WRN-34-10 size
    m = build("wrn34_10", "max")
    assert (m.depth, m.widen_factor) == (34, 10)
    assert _n_params(m) == 46_160_474  # the pooling switch adds no parameters
    assert _n_params(build("wrn", "avg", depth=16, widen_factor=4)) == _usual_wrn_parameter_count(16, 4)


def test_build_names():
    assert ARCHS == ("smallcnn", "vgg16", "wrn34_10", "face_vgg16")
    assert isinstance(build("smallcnn"), SmallCNN)
    with pytest.raises(ValueError, match=r"arch must be one of \['smallcnn', 'vgg16', 'wrn34_10', 'face_vgg16', 'wrn'\]"):
        build("resnet18")
    with pytest.raises(ValueError, match="depth and widen_factor"):
        build("wrn", "max", depth=10)
