"""Your own model (issue 31): loading a factory and weights, the refusals that name what is wrong, the layers
found, images at the model's side."""
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from interpretgan import user_model as um
from interpretgan.cache import WeightsError
from interpretgan.data import ImageSet

LENET = "notebooks/examples/lenet5.py:lenet5"


def _images(n=8, side=28, channels=1):
    return ImageSet(torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8), torch.zeros(n, dtype=torch.long),
                    torch.arange(n))


def test_a_file_factory_and_a_module_factory_load(tmp_path):
    m = um.load_model(LENET)
    assert isinstance(m, nn.Sequential) and not m.training
    assert um.load_model(LENET).state_dict()["0.weight"].equal(m.state_dict()["0.weight"])  # seeded: same init
    assert isinstance(um.load_model("torchvision.models:resnet18"), torchvision.models.ResNet)


@pytest.mark.parametrize("spec, message", [
    ("no_colon.py", "must be 'path/to/file.py:factory'"),
    ("missing/file.py:net", "model file missing/file.py does not exist"),
    ("not_a_module_anywhere:net", "model module 'not_a_module_anywhere' does not import"),
    ("torchvision.models:no_such_net", "has no callable 'no_such_net'"),
])
def test_bad_model_specs_are_refused_by_name(spec, message):
    with pytest.raises(um.ModelError, match=message):
        um.load_model(spec)


def test_a_file_that_fails_to_import_and_a_factory_that_returns_no_module(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('typo in my model file')\n")
    with pytest.raises(um.ModelError, match="broken.py does not import: RuntimeError: typo in my model file"):
        um.load_model(f"{tmp_path / 'broken.py'}:net")
    (tmp_path / "nomodule.py").write_text("def net():\n    return 42\n")
    with pytest.raises(um.ModelError, match="returned int, not a torch.nn.Module"):
        um.load_model(f"{tmp_path / 'nomodule.py'}:net")


def test_weights_load_from_safetensors_and_state_dicts(tmp_path):
    torch.manual_seed(3)
    trained = um.load_model(LENET, seed=5)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save({"epoch": 3, "state_dict": trained.state_dict()}, tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        m = um.load_model(LENET, tmp_path / f)
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), trained.state_dict().values()))


def test_weights_that_do_not_match_or_are_damaged_are_refused_with_what_they_hold(tmp_path):
    resnet = torchvision.models.resnet18(num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in resnet.items()}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match=r"does not match the model \(122 tensors in the file, 10 in the model\): "
                                           r"the model expects 10 tensors the file lacks: 0.weight"):
        um.load_model(LENET, tmp_path / "other.safetensors")
    lenet = um.load_model(LENET).state_dict()
    lenet["7.weight"] = torch.zeros(120, 256)
    torch.save(lenet, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match=r"shapes differ: 7.weight: file \(120, 256\), model \(120, 400\)"):
        um.load_model(LENET, tmp_path / "shape.pt")
    (tmp_path / "damaged.safetensors").write_bytes(pickle.dumps({"not": "weights"}))
    with pytest.raises(WeightsError, match="damaged.safetensors cannot be read as weights: it holds a Python pickle"):
        um.load_model(LENET, tmp_path / "damaged.safetensors")
    (tmp_path / "text.safetensors").write_text('{"json": 1}')
    with pytest.raises(WeightsError, match="text.safetensors cannot be read as safetensors weights: it holds 11 bytes of JSON text"):
        um.load_model(LENET, tmp_path / "text.safetensors")
    with pytest.raises(um.ModelError, match="weights file .*nothing.pt does not exist"):
        um.load_model(LENET, tmp_path / "nothing.pt")


def test_check_model_refuses_random_layers_wrong_outputs_and_non_square_images():
    um.check_model(um.load_model(LENET), _images(), 10)
    with pytest.raises(um.ModelError, match=r"output on 4 images is \(4, 10\), not \(4, 2\) logits"):
        um.check_model(um.load_model(LENET), _images(), 2)

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28 * 28, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) + torch.randn(len(x), 10)

    with pytest.raises(um.ModelError, match="changes between two passes in eval mode"):
        um.check_model(Noisy(), _images(), 10)
    with pytest.raises(um.ModelError, match=r"fails on \(1, 32, 32\) images .*does image_size match"):
        um.check_model(um.load_model(LENET), _images(side=32), 10)
    wide = ImageSet(torch.zeros(4, 1, 28, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), torch.arange(4))
    with pytest.raises(um.ModelError, match="square images; these are 28 x 32"):
        um.check_model(um.load_model(LENET), wide, 10)


def test_find_layers_gives_conv_blocks_and_linear_layers_in_forward_order():
    assert um.find_layers(um.load_model(LENET), torch.zeros(2, 1, 28, 28)) == ["2", "5", "8", "10", "11"]
    resnet = torchvision.models.resnet18(num_classes=10)
    assert um.find_layers(resnet, torch.zeros(2, 3, 64, 64)) == ["maxpool", "layer1", "layer2", "layer3", "layer4",
                                                                 "fc"]
    bn = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                       nn.Linear(4 * 15 * 15, 2))
    assert um.find_layers(bn, torch.zeros(2, 3, 32, 32)) == ["2", "5"]
    with pytest.raises(um.ModelError, match="found no convolution or linear layer"):
        um.find_layers(nn.Sequential(nn.Flatten()), torch.zeros(2, 3, 8, 8))


def test_images_at_the_models_side(monkeypatch):
    mnist28 = um.images_for("mnist", "test", image_size=28)
    assert mnist28.shape == (1, 28, 28) and len(mnist28) == 10_000 and mnist28.name == "mnist28-test"
    assert um.images_for("mnist", "test").shape == (1, 28, 28)  # a user's MNIST model usually takes 28 x 28
    assert um.images_for("mnist", "test", image_size=64).shape == (1, 64, 64)


def test_an_image_folder(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for c, colour in (("cat", 40), ("dog", 200)):
            (tmp_path / split / c).mkdir(parents=True)
            for k in range(3):
                Image.new("RGB", (20, 20), (colour, k, 0)).save(tmp_path / split / c / f"{k}.png")
    data = um.images_for(str(tmp_path), "train", image_size=28)
    assert data.shape == (3, 28, 28) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(int(data.images[3, 0, 14, 14]) - 200) <= 1
    with pytest.raises(um.ModelError, match="is not a folder"):
        um.images_for(str(tmp_path / "nowhere"), "train")
