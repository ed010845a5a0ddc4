"""CelebA: the loader on tiny CelebA-shaped folders written here, the gender VGG16's named layers, Table 5's
compression networks, and (when the shared subset is present) the real test split's known counts."""
import numpy as np
import pytest
import torch
from PIL import Image

from interpretgan import data, gan, paths, zoo
from interpretgan.models import FaceVGG16, build, latent_shapes

ATTRS = ["5_o_Clock_Shadow", "Eyeglasses", "Male", "Wearing_Hat"]


def _write_celeba(root, layout="celeba-subset", n=9, partitions=(0, 0, 0, 0, 1, 1, 2, 2, 2), seed=0):
    """A CelebA-shaped folder: n aligned 178x218 JPEGs with known pixels, the attribute file (Male on odd
    images, Wearing_Hat on image 2) and a partition file that also lists images absent from the folder."""
    folder = root / layout
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"{k + 1:06d}.jpg" for k in range(n)]
    for k, name in enumerate(names):
        pixels = np.full((218, 178, 3), 20 * k, dtype=np.uint8)
        pixels[:, :89] += rng.integers(0, 5, size=(218, 89, 3), dtype=np.uint8)  # left half differs: flips show
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
    rows = [f"{name} " + " ".join(("1" if (a == "Male" and k % 2) or (a == "Wearing_Hat" and k == 2) else "-1")
                                 for a in ATTRS) for k, name in enumerate(names)]
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)}\n" + "\n".join(rows) + "\n")
    extra = [f"{n + 1:06d}.jpg 0", f"{n + 2:06d}.jpg 2"]  # the official file lists every image of CelebA
    (folder / "list_eval_partition.txt").write_text(
        "\n".join([f"{name} {p}" for name, p in zip(names, partitions)] + extra) + "\n")
    return folder


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def test_loader_partitions_labels_attributes_and_crop(tmp_path, artifacts):
    folder = _write_celeba(tmp_path / "data")
    train = data.celeba("train", tmp_path / "data", size=64)
    test = data.celeba("test", tmp_path / "data", size=64)
    valid = data.celeba("valid", tmp_path / "data", size=32)
    assert (len(train), len(valid), len(test)) == (4, 2, 3)
    assert train.images.shape == (4, 3, 64, 64) and valid.images.shape == (2, 3, 32, 32)
    assert train.labels.tolist() == [0, 1, 0, 1] and test.labels.tolist() == [0, 1, 0]  # images 7, 8, 9
    assert train.attribute_names == tuple(ATTRS) and train.attributes.dtype == torch.bool
    assert train.attribute("Wearing_Hat").tolist() == [False, False, True, False]
    assert torch.equal(train.attribute("Male").long(), train.labels)
    # progressive GAN's crop: the 128x128 square centred at (89, 121), here downsampled to 64
    with Image.open(folder / "img_align_celeba" / "000002.jpg") as img:
        ref = np.asarray(img.convert("RGB").crop((25, 57, 153, 185)).resize((64, 64), Image.Resampling.BILINEAR,
                                                                              reducing_gap=None))
    assert np.array_equal(train.images[1].permute(1, 2, 0).numpy(), ref)
    sub = train.subset(2, seed=0)
    assert torch.equal(sub.attributes, train.attributes[sub.indices])
    with pytest.raises(ValueError, match="attribute must be one of"):
        train.attribute("Hat")


def test_second_call_reads_the_decoded_cache(tmp_path, artifacts, monkeypatch):
    _write_celeba(tmp_path / "data")
    first = data.celeba("train", tmp_path / "data")
    assert len(list((artifacts / "data").glob("celeba-subset-train-64-*.safetensors"))) == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_decode_faces", no_decode)
    again = data.celeba("train", tmp_path / "data")
    assert torch.equal(again.images, first.images) and again.attribute_names == first.attribute_names
    assert torch.equal(again.attributes, first.attributes)


def test_full_layout_is_preferred_to_the_subset(tmp_path, artifacts):
    _write_celeba(tmp_path / "data", "celeba-subset", seed=0)
    _write_celeba(tmp_path / "data", "celeba", n=6, partitions=(0, 0, 0, 1, 2, 2), seed=1)
    assert data.celeba_source(tmp_path / "data") == "celeba"
    assert len(data.celeba("test", tmp_path / "data")) == 2
    assert data.celeba("test", tmp_path / "data").name.startswith("celeba-test")


def test_truncated_image_is_refused_with_its_path(tmp_path, artifacts):
    folder = _write_celeba(tmp_path / "data")
    bad = folder / "img_align_celeba" / "000008.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(data.DataError, match="000008.jpg.*failed to decode"):
        data.celeba("test", tmp_path / "data")
    assert not (artifacts / "data").exists() or not list((artifacts / "data").glob("*.safetensors"))


def test_wrong_size_and_missing_image_are_refused(tmp_path, artifacts):
    folder = _write_celeba(tmp_path / "data")
    Image.new("RGB", (64, 64)).save(folder / "img_align_celeba" / "000007.jpg")
    with pytest.raises(data.DataError, match="000007.jpg is 64x64; expected an aligned CelebA image of 178x218"):
        data.celeba("test", tmp_path / "data")
    (folder / "img_align_celeba" / "000007.jpg").unlink()
    with pytest.raises(data.DataError, match="missing CelebA image .*000007.jpg"):
        data.celeba("test", tmp_path / "data")


def test_missing_or_malformed_attribute_file_is_named(tmp_path, artifacts):
    folder = _write_celeba(tmp_path / "data")
    text = (folder / "list_attr_celeba.txt").read_text()
    (folder / "list_attr_celeba.txt").write_text("\n".join(text.splitlines()[:-2]))  # two rows short
    with pytest.raises(data.DataError, match="list_attr_celeba.txt is truncated or malformed: line 1 says 9"):
        data.celeba("train", tmp_path / "data")
    (folder / "list_attr_celeba.txt").unlink()
    with pytest.raises(data.DataError, match="lacks list_attr_celeba.txt"):
        data.celeba("train", tmp_path / "data")


def test_missing_dataset_names_both_layouts(tmp_path, artifacts):
    with pytest.raises(data.DataError) as err:
        data.celeba("train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "celeba") in msg and str(tmp_path / "celeba-subset") in msg and "INTERPRETGAN_DATA" in msg
    with pytest.raises(ValueError, match="split must be one of"):
        data.celeba("val", tmp_path)
    with pytest.raises(ValueError, match="size must be one of"):
        data.celeba("train", tmp_path, size=100)


@pytest.mark.skipif(not (paths.data_root() / "celeba-subset").is_dir() and not (paths.data_root() / "celeba").is_dir(),
                    reason="no CelebA under the data root")
def test_shared_subset_test_split_counts():
    test = data.celeba("test", size=32)
    if data.celeba_source() == "celeba-subset":
        assert len(test) == 660 and int(test.labels.sum()) == 156  # the subset's README: 156 male, 504 not
    assert test.images.dtype == torch.uint8 and test.attributes.shape == (len(test), 40)


# ----------------------------------------------------------------------------------------------
# The gender VGG16 and Table 5


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_face_vgg16_named_layers_equal_a_manual_forward(pooling):
    torch.manual_seed(0)
    model = FaceVGG16(pooling=pooling, image_size=64, width=0.125, hidden=32).eval()
    assert [n for n, _ in model.named_children()] == list(model.layer_names)
    x = torch.rand(3, 3, 64, 64)
    h = x
    for block in (model.block1, model.block2, model.block3, model.block4, model.block5):
        for m in block:
            h = m(h)
    h = model.fc3[1](model.fc2[2](model.fc2[1](model.fc1[2](model.fc1[1](h.flatten(1))))))
    assert torch.allclose(model(x), h, atol=1e-5)
    for layer in model.layer_names:
        pre, post = model.split(layer)
        assert torch.allclose(post(pre(x)), model(x), atol=1e-5)
    pools = [m for m in model.modules() if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    assert len(pools) == 5 and all(isinstance(m, torch.nn.MaxPool2d if pooling == "max" else torch.nn.AvgPool2d)
                                   for m in pools)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 3


def test_face_vgg16_paper_size_latents_and_parameters():
    model = build("face_vgg16", image_size=128)
    shapes = latent_shapes(model, (3, 128, 128))
    assert shapes == {"block1": (64, 64, 64), "block2": (128, 32, 32), "block3": (256, 16, 16),
                      "block4": (512, 8, 8), "block5": (512, 4, 4), "fc1": (4096,), "fc2": (4096,), "fc3": (2,)}
    # 13 convs + BN of VGG16 (14,723,136 + 8,448) and 8192*4096 + 4096*4096 + 4096*2 (+ biases)
    assert sum(p.numel() for p in model.parameters()) == 65_071_170


TABLE5 = {"block1": "3x3 Conv, 128 -> AvgPooling -> 3x3 Conv, 256 -> AvgPooling -> 3x3 Conv, 512 -> AvgPooling -> "
                    "3x3 Conv, 512 -> AvgPooling",
          "block2": "3x3 Conv, 256 -> AvgPooling -> 3x3 Conv, 512 -> AvgPooling -> 3x3 Conv, 512 -> AvgPooling",
          "block3": "3x3 Conv, 512 -> AvgPooling -> 3x3 Conv, 512 -> AvgPooling",
          "block4": "3x3 Conv, 512 -> AvgPooling", "block5": "3x3 Conv, 512", "fc1": "FC", "fc2": "FC", "fc3": "FC"}


def test_table5_compression_networks_at_128_feed_the_generator():
    model = build("face_vgg16", image_size=128)
    G = gan.Generator(512, (16, 16, 8, 8, 8, 8), 3, code_map=True)
    for layer, shape in latent_shapes(model, (3, 128, 128)).items():
        C = gan.CompressionNet(shape, 512, code_map=True).eval()
        assert C.describe() == TABLE5[layer]
        code = C(torch.randn(2, *shape))
        assert code.shape == (2, 512, 4, 4)
        assert G(code).shape == (2, 3, 128, 128)


def test_compression_networks_at_64_feed_the_generator():
    settings = gan.GANSettings(code_dim=32, channels=(16, 16, 8, 8, 8), code_map=True)
    model = build("face_vgg16", image_size=64, width=0.25, hidden=64)
    G = gan.Generator(settings.code_dim, settings.channels, 3, code_map=True)
    described = {}
    for layer, shape in latent_shapes(model, (3, 64, 64)).items():
        C = gan.CompressionNet(shape, settings.code_dim, code_map=True).eval()
        described[layer] = C.describe()
        assert G(C(torch.randn(2, *shape))).shape == (2, 3, 64, 64) and settings.image_size == 64
    assert described["block5"] == "Upsample to 4x4 -> 3x3 Conv, 32"  # block5 is 2x2 at 64 px
    assert described["block4"] == "3x3 Conv, 32" and described["block1"].count("AvgPooling") == 3


def test_code_map_is_left_out_of_the_mnist_cache_key():
    """Earlier (MNIST) explainer keys stay valid: the new field is absent from as_dict at its default."""
    assert "code_map" not in gan.GANSettings().as_dict()
    assert gan.GANSettings(code_map=True).as_dict()["code_map"] is True


# ----------------------------------------------------------------------------------------------
# Training, measures and parameters for faces


def test_balanced_accuracy_known_answers():
    from interpretgan.attacks import balanced_accuracy_of

    labels = torch.tensor([0] * 76 + [1] * 24)
    assert balanced_accuracy_of(labels, torch.zeros(100, dtype=torch.long)) == pytest.approx(0.5)  # majority only
    pred = labels.clone()
    pred[:19] = 1  # 19 of 76 women wrong: recall 0.75 and 1.0
    assert balanced_accuracy_of(labels, pred) == pytest.approx((57 / 76 + 1.0) / 2)


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    from interpretgan.training import random_flip

    x = torch.rand(64, 3, 8, 8)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = [bool(torch.equal(out[i], x[i])) for i in range(64)]
    mirrored = [bool(torch.equal(out[i], x[i].flip(-1))) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and 16 < sum(mirrored) < 48
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))


def test_make_optimizer_names_the_choices():
    from interpretgan.training import make_optimizer

    w = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adam", w, 0.001), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer must be one of \\['sgd', 'adam'\\]"):
        make_optimizer("lbfgs", w, 0.001)


def _face_model():
    torch.manual_seed(0)
    return FaceVGG16(image_size=32, width=0.125, hidden=16).eval()


def test_agreement_of_perfect_explanations(identity_explainer):
    """Explanations equal to the faces: f and the judge agree everywhere and the Fréchet distance is 0."""
    from interpretgan import quality
    from interpretgan.models import JudgeResNet

    torch.manual_seed(1)
    x = torch.rand(40, 3, 32, 32)
    faces = data.ImageSet((x * 255).round().to(torch.uint8), torch.randint(0, 2, (40,)), torch.arange(40))
    judge = JudgeResNet(num_classes=2, in_channels=3).eval()
    explainers = {"block1": identity_explainer(), "fc3": identity_explainer()}
    table = quality.agreement(_face_model(), {"resnet": judge}, explainers, faces)
    assert list(table.index) == ["block1", "fc3"]
    assert (table["f agrees"] == 1).all() and (table["f agrees (balanced)"] == 1).all()
    assert (table["resnet agrees"] == table["resnet on faces"]).all()
    assert table["Fréchet resnet"].abs().max() < 1e-6
    # they follow their faces: each is its own nearest face, all 40 are distinct
    assert (table["distinct"] == 40).all()
    assert all((table[f"retrieval {c}"] == 1).all() for c in ("0", "1"))
    per_class = [c for c in table.columns if c.startswith("f agrees on ")]  # one per class f gives these faces
    assert per_class and (table[per_class] == 1).all().all()
    assert [c for c in table.columns if c.startswith("resnet agrees on ")] == [c.replace("f ", "resnet ", 1) for c in per_class]


def test_face_panel_is_trained_once_cached_and_names_each_judges_accuracy():
    """The smoke face panel: four judges of three architectures, the robust one adversarially trained at the
    attack's eps; each reports accuracy and balanced accuracy, and a second call reads the cache."""
    panel = zoo.judges("smoke", dataset="celeba", progress=False)
    assert set(panel) == {"resnet", "lenet", "mlp", "robust"}
    assert {type(m).__name__ for m, _ in panel.values()} == {"JudgeResNet", "JudgeCNN", "JudgeMLP"}
    for name, (model, info) in panel.items():
        assert 0 <= info["test_accuracy"] <= 1 and 0 <= info["balanced_accuracy"] <= 1
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    robust = panel["robust"][1]
    assert robust["settings"]["training"] == "atta" and robust["settings"]["eps"] == pytest.approx(2 / 255)
    assert 0 <= robust["robust_accuracy"] <= 1
    again = zoo.judge("smoke", name="lenet", dataset="celeba", progress=False)[1]
    assert again["source"] == "cache" and again["test_accuracy"] == panel["lenet"][1]["test_accuracy"]


@pytest.mark.parametrize("name", ["resnet", "lenet", "mlp", "robust"])
def test_shipped_face_judges_load_under_their_key_small_with_their_accuracy(name, tmp_path, monkeypatch):
    """Each default face judge ships under its current key, in fp16 under 2 MiB (LeNet and the MLP read faces
    average-pooled to 32 px), with the accuracy it reached in training."""
    from interpretgan import cache, zoo

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))  # nothing cached: the shipped weights are used
    model, info = zoo.judge("default", name=name, dataset="celeba", progress=False, exact=False)
    f = cache.shipped(info["key"])
    assert info["source"] == "shipped" and f.name == f"celeba-judge-{name}.safetensors"
    assert f.stat().st_size < 2 * 2 ** 20
    assert info["test_accuracy"] == pytest.approx(info["history"]["test_accuracy"][-1], abs=2e-3)
    assert info["test_accuracy"] > 0.9 and info["balanced_accuracy"] > 0.85
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_face_judges_downsample_only_faces_of_64_px_and_more():
    from interpretgan import models, zoo

    assert zoo.judge_settings("default", "lenet", dataset="celeba")["model"]["downsample"] == 2
    assert "downsample" not in zoo.judge_settings("default", "resnet", dataset="celeba")["model"]
    assert "downsample" not in zoo.judge_settings("smoke", "mlp", dataset="celeba")["model"]  # 32 px already
    x = torch.rand(3, 3, 64, 64)
    lenet = models.JudgeCNN(2, in_channels=3, image_size=64, downsample=2)
    rest = torch.nn.Sequential(*lenet.body[1:], lenet.head)  # its layers after the pooling read a 32 px face
    assert torch.allclose(lenet(x), rest(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-5)
    assert sum(p.numel() for p in lenet.parameters()) < 700_000  # against 4.2 M reading 64 px
    with pytest.raises(ValueError, match="downsample"):
        models.JudgeMLP(2, image_size=64, in_channels=3, downsample=0)


def test_adversarial_label_share_counts_only_images_the_attack_flipped(identity_explainer):
    from interpretgan import diagnosis
    from interpretgan.attacks import AttackResult, predict

    model = _face_model()
    torch.manual_seed(2)
    x_adv = torch.rand(30, 3, 32, 32)
    pred_adv = predict(model, x_adv)
    labels = 1 - pred_adv             # every image misclassified after the attack ...
    pred_clean = labels.clone()
    pred_clean[:10] = 1 - labels[:10]  # ... but the first 10 were already wrong: not fooled by it
    d_star = AttackResult("pgd20", labels, pred_clean, pred_adv, x_adv)
    explainers = {"block1": identity_explainer(), "fc2": identity_explainer()}
    d = diagnosis.Diagnosis(table=None, explainers=explainers, clean=0.0, robust=0.0,
                            correct={}, model=model, d_star=d_star, test=None)
    share = diagnosis.adversarial_label_share(d)
    assert share.attrs["n_fooled"] == 20
    assert (share["share"] == 1.0).all() and (share["share_low"] == 1.0).all()  # f(x_hat) = f(x*) when x_hat = x*
    none = diagnosis.Diagnosis(None, d.explainers, 0.0, 0.0, {}, model,
                               AttackResult("pgd20", labels, pred_adv, pred_adv, x_adv), None)
    assert diagnosis.adversarial_label_share(none).attrs["n_fooled"] == 0


def test_celeba_settings_refuse_what_the_paper_does_not_do():
    from interpretgan import zoo

    s = zoo.classifier_settings("default", dataset="celeba")
    assert s["model"] == {"arch": "face_vgg16", "image_size": 64, "width": 0.25, "hidden": 256}
    assert s["optimizer"] == "adam" and s["flip"] is True
    assert zoo.classifier_settings("paper", dataset="celeba")["model"]["image_size"] == 128
    with pytest.raises(ValueError, match="trained naturally only"):
        zoo.classifier_settings("default", training="atta", dataset="celeba")
    with pytest.raises(ValueError, match="arch for celeba must be 'face_vgg16'"):
        zoo.classifier_settings("default", dataset="celeba", arch="vgg16")
    with pytest.raises(ValueError, match="judge for celeba must be one of"):
        zoo.judge_settings("default", "vgg", dataset="celeba")
    e = zoo.explainer_settings("default", layer="block3", dataset="celeba")
    assert e["gan"]["code_map"] is True and len(e["gan"]["channels"]) == 5  # 4 .. 64 px
    paper = zoo.explainer_settings("paper", layer="block3", dataset="celeba")["gan"]
    # the paper: 6 scales to 128 px, 48,000 iterations at the first scale and 96,000 at each other
    assert len(paper["channels"]) == 6 and paper["images"][0] == 48_000 * paper["batch_size"]
    assert paper["images"][1:] == [96_000 * paper["batch_size"]] * 5


def test_celeba_keys_record_the_whole_data_set_but_not_the_subset(tmp_path):
    """Models trained on the whole CelebA and on the 6,000-face subset never share a cache entry; the
    subset's keys (those of the shipped weights) are the keys of a root without CelebA."""
    from interpretgan import cache, zoo

    def keys(root):
        return (cache.settings_key(zoo.classifier_settings("default", dataset="celeba", data_root=root)),
                cache.settings_key(zoo.judge_settings("default", "resnet", dataset="celeba", data_root=root)),
                cache.settings_key(zoo.explainer_settings("default", layer="block2", dataset="celeba",
                                                          data_root=root)))

    empty, subset, full = tmp_path / "empty", tmp_path / "subset", tmp_path / "full"
    empty.mkdir()
    _write_celeba(subset, "celeba-subset")
    _write_celeba(full, "celeba")
    assert keys(subset) == keys(empty)
    assert zoo.classifier_settings("default", dataset="celeba", data_root=full)["data"] == "celeba"
    assert all(a != b for a, b in zip(keys(full), keys(subset)))
    # MNIST keys do not depend on what CelebA the root holds
    assert zoo.classifier_settings("default", data_root=full) == zoo.classifier_settings("default", data_root=subset)


def test_face_parameters():
    from interpretgan.params import ParameterError, default_epsilon, resolve

    assert default_epsilon("celeba") == pytest.approx(2 / 255) and default_epsilon("mnist", "8/255") == "8/255"
    with pytest.raises(ParameterError, match="'dataset' must be one of mnist, celeba"):
        default_epsilon("faces")
    assert resolve(dataset="celeba", layers="fc1, BLOCK2").layers == ["block2", "fc1"]
    assert resolve(dataset="mnist", layers="all").layers[0] == "conv1"


def _faces_with_attribute(n=40, seed=3):
    """n random faces, the brighter half annotated with Eyeglasses (the only attribute)."""
    torch.manual_seed(seed)
    x = torch.rand(n, 3, 32, 32) * torch.linspace(0.2, 1.0, n).view(-1, 1, 1, 1)
    has = x.mean(dim=(1, 2, 3)) > x.mean(dim=(1, 2, 3)).median()
    return data.ImageSet((x * 255).round().to(torch.uint8), torch.zeros(n, dtype=torch.long), torch.arange(n),
                         "faces", has.view(-1, 1), ("Eyeglasses",))


class _BrightnessReader(torch.nn.Module):
    """Reads "has the attribute" (label 1) where an image's mean is above ``threshold``."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(float(threshold)), requires_grad=False)

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3)) - self.threshold
        return torch.stack([-score, score], dim=1)


def test_attribute_labels_relabel_and_balance_by_repeating_the_rare_class():
    faces = _faces_with_attribute(n=10)
    faces.attributes[:, 0] = torch.tensor([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    plain = data.attribute_labels(faces, "Eyeglasses")
    assert plain.labels.tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0] and len(plain) == 10
    balanced = data.attribute_labels(faces, "Eyeglasses", balanced=True)
    assert int(balanced.labels.sum()) == 8 and len(balanced) == 16  # 8 without, the 2 with repeated 4 times each
    assert sorted(balanced.indices[balanced.labels == 1].tolist()) == [0] * 4 + [5] * 4
    with pytest.raises(ValueError, match="attribute must be one of"):
        data.attribute_labels(faces, "Wearing_Hat")


def test_attribute_kept_known_answers(identity_explainer):
    """A reader that sees the attribute exactly where it is annotated: explanations equal to the faces keep it for
    every wearer (and give it to no one else); blank explanations keep it for no one."""
    from interpretgan import quality

    faces = _faces_with_attribute()
    x = faces.tensors()[0]
    means = x.mean(dim=(1, 2, 3)).sort().values
    reader = _BrightnessReader((means[19] + means[20]) / 2).eval()

    class Blank(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images, exact=None):
            return torch.zeros_like(images)

    table = quality.attribute_kept({"Eyeglasses": reader}, {"block1": identity_explainer(), "fc3": Blank()}, faces)
    assert list(table.index) == ["block1", "fc3", "faces"] and table.attrs["wearers"] == {"Eyeglasses": 20}
    assert table.loc["block1", "Eyeglasses"] == 1 and table.loc["faces", "Eyeglasses"] == 1
    assert table.loc["block1", "Eyeglasses false"] == 0 and table.loc["block1", "Eyeglasses low"] == 1
    assert table.loc["fc3", "Eyeglasses"] == 0 and table.loc["fc3", "Eyeglasses high"] == 0
    # a reader that misses half the wearers: the share is 1/2 with an interval around it
    half = _BrightnessReader(means[29:31].mean()).eval()
    row = quality.attribute_kept({"Eyeglasses": half}, {"block1": identity_explainer()}, faces).loc["block1"]
    assert row["Eyeglasses"] == 0.5 and row["Eyeglasses low"] < 0.5 < row["Eyeglasses high"]


def test_smoke_attribute_reader_is_trained_balanced_and_cached():
    from interpretgan import zoo

    model, info = zoo.attribute_reader("smoke", attribute="Eyeglasses", progress=False)
    assert info["settings"]["balanced"] and info["settings"]["attribute"] == "Eyeglasses"
    assert 0 <= info["test_accuracy"] <= 1 and 0 <= info["balanced_accuracy"] <= 1
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    again = zoo.attribute_reader("smoke", attribute="Eyeglasses", progress=False)[1]
    assert again["source"] == "cache" and again["test_accuracy"] == info["test_accuracy"]
    with pytest.raises(ValueError, match="attribute must be one of"):
        zoo.attribute_reader_settings("smoke", "Bald")


def test_most_visible_picks_the_wearers_the_reader_is_surest_of_and_concat_keeps_attributes():
    from interpretgan import quality

    faces = _faces_with_attribute()
    means = faces.tensors()[0].mean(dim=(1, 2, 3))
    pick = quality.most_visible(_BrightnessReader(0.0).eval(), faces, "Eyeglasses", k=3)  # surest where brightest
    assert pick.tolist() == means.argsort(descending=True)[:3].tolist()
    assert bool(faces.attribute("Eyeglasses")[pick].all())
    joined = data.concat([faces.take(slice(0, 10)), faces.take(slice(10, 40))])
    assert torch.equal(joined.images, faces.images) and torch.equal(joined.attributes, faces.attributes)
    assert joined.attribute_names == ("Eyeglasses",) and len(joined) == 40
