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


# ----------------------------------------------------------------------------------------------
# CIFAR-10: the shared lossy JPEG copy, and the real python batches preferred when present.

import os  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402

CIFAR_JPEG = paths.data_root() / "cifar10-jpeg"
needs_cifar_jpeg = pytest.mark.skipif(
    not (CIFAR_JPEG / "train").is_dir() or (paths.data_root() / "cifar-10-batches-py").is_dir(),
    reason=f"needs the CIFAR-10 JPEG copy at {CIFAR_JPEG} (and no real batches beside it)")


@pytest.fixture(scope="module")
def cifar_test():
    return data.cifar10("test")


@needs_cifar_jpeg
def test_cifar10_jpeg_test_split(cifar_test):
    s = cifar_test
    assert s.images.shape == (10_000, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.int64 and torch.equal(s.indices, torch.arange(10_000))
    assert torch.bincount(s.labels, minlength=10).tolist() == [1_000] * 10
    # ordered by class, then file name: image k*1000 + j is <class k>/000j.jpg
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(1_000))
    assert data.CIFAR10_CLASSES[int(s.labels[0])] == "airplane" and data.CIFAR10_CLASSES[9] == "truck"
    from PIL import Image
    for k, j in ((0, 0), (3, 17), (9, 999)):
        img = Image.open(CIFAR_JPEG / "test" / data.CIFAR10_CLASSES[k] / f"{j:04d}.jpg").convert("RGB")
        assert torch.equal(s.images[k * 1000 + j], torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    assert s.name == "cifar10-jpeg-test" and "jpeg" in s.name
    assert data.cifar10_source().startswith("cifar10-jpeg") and "CIFAR-10 (JPEG copy)" in data.cifar10_source()


@needs_cifar_jpeg
def test_cifar10_jpeg_train_split_counts_and_mean():
    s = data.cifar10("train")
    assert s.images.shape == (50_000, 3, 32, 32) and s.images.dtype == torch.uint8
    assert torch.bincount(s.labels, minlength=10).tolist() == [5_000] * 10
    assert s.name == "cifar10-jpeg-train"
    mean = s.images.sum(dim=(0, 2, 3), dtype=torch.int64).double() / (len(s) * 32 * 32 * 255)
    # the datasets README's train mean of the JPEG copy
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465], dtype=torch.float64), atol=0.002)


@needs_cifar_jpeg
def test_cifar10_second_call_reads_the_cache(cifar_test, monkeypatch):
    cached = list((paths.artifacts_root() / "data").glob("cifar10-jpeg-test-*.safetensors"))
    assert len(cached) >= 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded the JPEG files again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_jpegs", no_decoding)
    again = data.cifar10("test")
    assert torch.equal(again.images, cifar_test.images) and torch.equal(again.labels, cifar_test.labels)


def _fake_cifar_batches(root, sizes, seed=0):
    """A tiny ``cifar-10-batches-py`` with ``sizes`` images per data batch and 7 test images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{k + 1}", n) for k, n in enumerate(sizes)] + [("test_batch", 7)]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": []}, f, protocol=2)
        written[name] = (x, y)
    return written


def test_cifar10_prefers_the_real_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    root = tmp_path / "data"
    written = _fake_cifar_batches(root, [3, 4, 2, 5, 1])
    (root / "cifar10-jpeg" / "train").mkdir(parents=True)  # a JPEG copy beside it must be ignored
    (root / "cifar10-jpeg" / "test").mkdir(parents=True)
    train, test = data.cifar10("train", root), data.cifar10("test", root)
    assert (train.name, test.name) == ("cifar10-train", "cifar10-test")
    assert data.cifar10_source(root) == "cifar-10-batches-py"
    assert len(train) == 15 and len(test) == 7 and train.shape == (3, 32, 32)
    x = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert torch.equal(train.images, torch.from_numpy(x).reshape(15, 3, 32, 32))
    assert train.labels.tolist() == sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    # channel-major rows: the first 1024 bytes are the red plane
    assert torch.equal(test.images[0, 0].flatten(), torch.from_numpy(written["test_batch"][0][0, :1024]))
    assert list((tmp_path / "artifacts" / "data").glob("cifar10-train-*.safetensors"))
    assert torch.equal(data.cifar10("train", root).images, train.images)  # from the cache


def test_cifar10_refuses_a_malformed_batch_and_foreign_pickles(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    _fake_cifar_batches(tmp_path, [2] * 5)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(data.DataError, match=r"test_batch.*\(n, 3072\)"):
        data.cifar10("test", tmp_path)
    with open(batch, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": os.system}, f)
    with pytest.raises(data.DataError, match="refusing to load"):
        data.cifar10("test", tmp_path)


def test_cifar10_missing_names_both_paths(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data.DataError) as err:
        data.cifar10("train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and str(tmp_path / "cifar10-jpeg") in msg
    assert "data_batch_1" in msg and "INTERPRETGAN_DATA" in msg and "data_root" in msg
    with pytest.raises(ValueError, match="split must be one of"):
        data.cifar10("val", tmp_path)


def test_missing_data_root_is_named_before_any_download(tmp_path, monkeypatch):
    import torchvision

    def never(*args, **kwargs):
        raise AssertionError("a download was tried")

    monkeypatch.setattr(torchvision.datasets, "MNIST", never)
    root = tmp_path / "no-such-folder"
    for load in (data.mnist32, data.cifar10, data.celeba):
        with pytest.raises(data.DataError, match="does not exist"):
            load("test", root)
    assert not root.exists()


def test_offline_download_leaves_the_data_root_as_found(tmp_path, monkeypatch):
    """Offline, no download is tried and nothing is created under the user's data root; a failed download
    removes what it created."""
    import torchvision

    calls = []
    monkeypatch.setattr(data, "_online", lambda host, timeout=3.0: False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda *a, **k: calls.append(a))
    with pytest.raises(data.DataError, match="not reachable"):
        data.mnist32("test", tmp_path)
    assert calls == [] and list(tmp_path.iterdir()) == []

    def half_download(root, *args, **kwargs):
        (tmp_path / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("mirror failed")

    monkeypatch.setattr(data, "_online", lambda host, timeout=3.0: True)
    monkeypatch.setattr(torchvision.datasets, "MNIST", half_download)
    with pytest.raises(data.DataError, match="mirror failed"):
        data.mnist32("test", tmp_path)
    assert list(tmp_path.iterdir()) == []
