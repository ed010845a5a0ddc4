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
