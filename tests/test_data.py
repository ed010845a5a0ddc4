import pytest
import torch

from interpretgan import data, paths

# Class counts of the official MNIST test split.
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist32_shapes_range_and_known_class_counts(test_set, train_set):
    assert test_set.images.shape == (10_000, 1, 32, 32) and test_set.images.dtype == torch.uint8
    assert train_set.images.shape == (60_000, 1, 32, 32)
    assert torch.bincount(test_set.labels).tolist() == TEST_COUNTS
    x, y = test_set.subset(64).tensors()
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.dtype == torch.int64


def test_resize_matches_torchvision_pil_pipeline(test_set):
    """Our tensor resize equals torchvision's Resize(32) on PIL images + ToTensor within 1/255."""
    from PIL import Image
    from torchvision import transforms

    raw = data._read_idx(paths.data_root() / "MNIST/raw/t10k-images-idx3-ubyte", 0x803, 10_000, (28, 28))
    tf = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    ref = torch.stack([tf(Image.fromarray(raw[i])) for i in range(50)])
    ours = test_set.images[:50].float() / 255
    assert float((ref - ours).abs().max()) <= 1 / 255 + 1e-6


def test_subset_is_fixed_and_keeps_original_indices(test_set):
    a, b = test_set.subset(100, seed=0), test_set.subset(100, seed=0)
    assert torch.equal(a.indices, b.indices) and len(a) == 100
    assert torch.equal(a.images, test_set.images[a.indices]) and torch.equal(a.labels, test_set.labels[a.indices])
    assert not torch.equal(test_set.subset(100, seed=1).indices, a.indices)
    assert test_set.subset(None) is test_set


def test_batches_cover_every_image_once(test_set):
    s = test_set.subset(1000)
    seen = torch.cat([i for _, _, i in s.batches(128, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(1000))


def test_missing_data_names_the_path(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(data.DataError) as err:
        data.mnist32("test", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "t10k-images-idx3-ubyte" in msg and "INTERPRETGAN_DATA" in msg


def test_truncated_file_is_refused_with_path_and_expected_size(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    src = paths.data_root() / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((src / name).read_bytes())
    (raw / "t10k-images-idx3-ubyte").write_bytes((src / "t10k-images-idx3-ubyte").read_bytes()[:100_000])
    with pytest.raises(data.DataError) as err:
        data.mnist32("test", tmp_path)
    assert "t10k-images-idx3-ubyte" in str(err.value) and "7840016 bytes" in str(err.value)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERPRETGAN_DATA", str(tmp_path))
    assert paths.data_root() == tmp_path.resolve()
    assert paths.data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("INTERPRETGAN_DATA")
    assert paths.data_root() == paths.REPO_ROOT / "data"
