import json

import pytest
import torch

from interpretgan import cache


def test_key_is_order_independent_and_changes_with_every_setting():
    s = {"pooling": "max", "seed": 0, "lr": 0.01, "lr_milestones": [5]}
    assert cache.settings_key(s) == cache.settings_key(dict(reversed(list(s.items()))))
    keys = {cache.settings_key({**s, k: v}) for k, v in
            [("pooling", "avg"), ("seed", 1), ("lr", 0.001), ("lr_milestones", [6])]}
    assert len(keys) == 4 and cache.settings_key(s) not in keys


def test_entry_folder_records_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))
    folder = cache.entry("classifiers", {"a": 1})
    assert folder.parent == tmp_path / "classifiers"
    assert json.loads((folder / "settings.json").read_text()) == {"a": 1}


def test_atomic_path_leaves_old_file_when_writer_dies(tmp_path):
    f = tmp_path / "ckpt.pt"
    f.write_text("old")
    with pytest.raises(RuntimeError):
        with cache.atomic_path(f) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert f.read_text() == "old" and list(tmp_path.iterdir()) == [f]


def test_checkpoint_round_trip_without_unpickling_code(tmp_path):
    state = {"w": torch.arange(3.0), "epoch": 2, "history": {"loss": [1.0, 0.5]}}
    cache.save_checkpoint(state, tmp_path / "c.pt")
    back = cache.load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 2 and torch.equal(back["w"], state["w"]) and back["history"] == state["history"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception):
        cache.load_checkpoint(tmp_path / "evil.pt")


def test_shipped_weights_are_found_by_key_and_checked(tmp_path):
    sd = {"w": torch.randn(4, 4)}
    f = cache.ship(sd, "m.safetensors", "abc123", {"x": 1}, weights_dir=tmp_path)
    assert cache.shipped("abc123", tmp_path) == f and cache.shipped("other", tmp_path) is None
    torch.testing.assert_close(cache.load_weights(f)["w"], sd["w"])
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="SHA-256"):
        cache.shipped("abc123", tmp_path)
