import json
from pathlib import Path

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
    other = cache.ship(sd, "n.safetensors", "def456", {"x": 2}, weights_dir=tmp_path)
    cache.unship("m.safetensors", tmp_path)
    assert not f.exists() and cache.shipped("abc123", tmp_path) is None and cache.shipped("def456", tmp_path) == other
    assert list(cache.read_manifest(tmp_path)["files"]) == ["n.safetensors"]
    with pytest.raises(KeyError):
        cache.unship("m.safetensors", tmp_path)


class _Payload:
    """Any class of ours: pickled by reference, so safe loading refuses it."""


def test_unsafe_checkpoint_is_named_moved_aside_and_rebuilt(tmp_path):
    """A checkpoint holding Python objects: load_checkpoint names the file and says it was refused as unsafe
    (never torch's raw UnpicklingError); read_checkpoint moves it aside and returns None so the entry is rebuilt."""
    bad = tmp_path / "checkpoint.pt"
    torch.save({"state": _Payload()}, bad)
    with pytest.raises(cache.CheckpointError, match=f"{bad} was refused as unsafe"):
        cache.load_checkpoint(bad)
    with pytest.warns(cache.RefusedCheckpointWarning, match="moved aside to checkpoint.pt.refused"):
        assert cache.read_checkpoint(bad) is None
    assert not bad.exists() and (tmp_path / "checkpoint.pt.refused").is_file()
    assert cache.read_checkpoint(bad) is None  # missing: nothing to warn about
    cache.save_checkpoint({"x": torch.ones(2)}, bad)
    assert torch.equal(cache.read_checkpoint(bad)["x"], torch.ones(2))


def test_checkpoint_read_mapped_holds_the_same_and_can_be_replaced(tmp_path):
    """read_checkpoint(mmap=True), what a resume uses to learn a checkpoint's epoch without reading its tensors,
    gives the same numbers and tensors as a full read, and the file can be replaced while the mapping lives."""
    f = tmp_path / "c.pt"
    saved = {"epoch": 7, "model": {"w": torch.arange(12.0).reshape(3, 4)}, "history": {"loss": [1.5, 0.5]}}
    cache.save_checkpoint(saved, f)
    mapped, full = cache.read_checkpoint(f, mmap=True), cache.read_checkpoint(f)
    assert mapped["epoch"] == full["epoch"] == 7 and mapped["history"] == full["history"]
    assert torch.equal(mapped["model"]["w"], full["model"]["w"])
    cache.save_checkpoint({"epoch": 8}, f)
    assert cache.read_checkpoint(f, mmap=True)["epoch"] == 8 and torch.equal(mapped["model"]["w"], saved["model"]["w"])


def test_truncated_checkpoint_is_named(tmp_path):
    f = tmp_path / "c.pt"
    cache.save_checkpoint({"x": torch.ones(1000)}, f)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(cache.CheckpointError, match=f"{f} cannot be read as a checkpoint"):
        cache.load_checkpoint(f)


def test_written_files_are_readable_like_the_rest(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        cache.save_weights({"w": torch.ones(2)}, tmp_path / "w.safetensors")
        cache.save_checkpoint({"x": 1}, tmp_path / "c.pt")
        cache.write_json(tmp_path / "s.json", {"a": 1})
    finally:
        os.umask(mask)
    for name in ("w.safetensors", "c.pt", "s.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_cache_cli_help_and_default_leave_the_readme_alone_and_only_the_flag_writes(tmp_path):
    """`python -m interpretgan.cache --help` rewrote the README (the module had no argument parser). Now --help
    prints usage, a plain run prints the table and writes nothing (--check fails on a stale block), and only
    --write-readme rewrites the block."""
    import subprocess
    import sys

    from interpretgan.paths import REPO_ROOT

    readme = REPO_ROOT / "README.md"
    before = (readme.read_bytes(), readme.stat().st_mtime_ns)
    cmd = [sys.executable, "-m", "interpretgan.cache"]
    helped = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--write-readme" in helped.stdout and "usage:" in helped.stdout
    assert (readme.read_bytes(), readme.stat().st_mtime_ns) == before  # the repository's README untouched
    # a stale copy: the block's table replaced by an old line
    text = readme.read_text()
    head, rest = text.split("<!-- shipped:begin -->\n", 1)
    _, tail = rest.split("\n<!-- shipped:end -->", 1)
    stale = f"{head}<!-- shipped:begin -->\n1 file, 0.1 MiB in all (limit 160 MiB).\n<!-- shipped:end -->{tail}"
    copy = tmp_path / "README.md"
    copy.write_text(stale)
    for flags, status in (([], 0), (["--check"], 1)):
        shown = subprocess.run(cmd + ["--readme", str(copy)] + flags, capture_output=True, text=True, timeout=120)
        assert shown.returncode == status, shown.stderr
        assert cache.shipped_summary() in shown.stdout and "stale; run python -m interpretgan.cache --write-readme" \
            in shown.stdout
        assert copy.read_text() == stale
    wrote = subprocess.run(cmd + ["--readme", str(copy), "--write-readme"], capture_output=True, text=True, timeout=120)
    assert wrote.returncode == 0 and "updated" in wrote.stdout
    assert copy.read_text() == text  # the block regenerated: the repository's README is up to date (test_environment)
    checked = subprocess.run(cmd + ["--readme", str(copy), "--check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and "up to date" in checked.stdout
    assert (readme.read_bytes(), readme.stat().st_mtime_ns) == before


def test_damaged_safetensors_is_named_with_what_it_holds_and_a_cache_copy_rebuilt(tmp_path):
    """A pickle, a torch.save zip, a truncated file or one without the expected tensors where safetensors should be:
    load_weights names the file and what it holds (never safetensors' bare 'header too large'); read_weights moves a
    cache copy aside and returns None so that it is rebuilt."""
    import pickle

    f = tmp_path / "model.safetensors"
    f.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(cache.WeightsError, match=f"{f} cannot be read as safetensors weights: it holds a Python pickle"):
        cache.load_weights(f)
    torch.save({"w": torch.ones(2)}, f)
    with pytest.raises(cache.WeightsError, match="a zip archive .* \\(what torch.save writes\\)"):
        cache.load_weights(f)
    with pytest.warns(cache.RefusedCheckpointWarning, match="moved aside to model.safetensors.refused"):
        assert cache.read_weights(f) is None
    assert not f.exists() and (tmp_path / "model.safetensors.refused").is_file()
    cache.save_weights({"w": torch.ones(1000)}, f)
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(cache.WeightsError, match="truncated, or not safetensors"):
        cache.load_weights(f)
    cache.save_weights({"w": torch.ones(3)}, f)
    with pytest.raises(cache.WeightsError, match=r"lacks the tensors \['labels'\]"):
        cache.load_weights(f, expect=("w", "labels"))
    assert torch.equal(cache.read_weights(f, expect=("w",))["w"], torch.ones(3))


def test_damaged_cache_entries_are_rebuilt_data_and_models(tmp_path, monkeypatch):
    """A pickle in place of a decoded data set or of a cached model: both are moved aside (the warning names them)
    and rebuilt; the rebuilt ones equal the originals."""
    import pickle

    from interpretgan import data, zoo

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))
    test = data.mnist32("test")
    (cached,) = (tmp_path / "data").glob("mnist32-test-*.safetensors")
    cached.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.warns(cache.RefusedCheckpointWarning, match=f"{cached.name} cannot be read as safetensors"):
        again = data.mnist32("test")
    assert torch.equal(again.images, test.images) and cached.is_file()
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.full((2,), float(len(calls)))}, {"test_accuracy": [0.5]}

    folder = cache.entry("judges", {"k": 1})
    state, source, _ = zoo._through_cache(folder, "k1", "model.safetensors", False, train)
    assert source == "trained" and zoo._through_cache(folder, "k1", "model.safetensors", False, train)[1] == "cache"
    (folder / "model.safetensors").write_bytes(pickle.dumps(state))
    with pytest.warns(cache.RefusedCheckpointWarning, match="model.safetensors cannot be read as safetensors"):
        state2, source2, _ = zoo._through_cache(folder, "k1", "model.safetensors", False, train)
    assert source2 == "trained" and len(calls) == 2 and (folder / "model.safetensors.refused").is_file()
    assert zoo._through_cache(folder, "k1", "model.safetensors", False, train)[1] == "cache"


def test_shipped_summary_groups_generators_by_kind(tmp_path):
    """One row per model and kind of generator: warm-started, fitted from nothing, scaling curve, inverters."""
    for layer in ("conv1", "conv2"):
        for suffix in ("-warm", "", "-x4", "-inverter"):
            cache.ship({"w": torch.ones(2)}, f"m-interpretgan-{layer}{suffix}.safetensors", f"{layer}{suffix}", {},
                       weights_dir=tmp_path)
    rows = [line for line in cache.shipped_summary(tmp_path).splitlines() if line.startswith("| m")]
    assert len(rows) == 4 and all("| conv1, conv2 | 2 |" in row for row in rows)
    assert any("warm-started from the prior" in row for row in rows)


def test_shipping_into_the_repositorys_weights_keeps_the_readme_block_current(tmp_path, monkeypatch):
    """A training that ships at its end left the README's shipped-weights block stale, and CI failed on it: a ship
    or unship into the repository's own weights/ now regenerates the block; a ship elsewhere leaves the README alone."""
    from interpretgan import paths

    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    readme = repo / "README.md"
    readme.write_text("intro\n<!-- shipped:begin -->\nold\n<!-- shipped:end -->\nrest\n")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setattr(paths, "SHIPPED_WEIGHTS_DIR", repo / "weights")
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache.ship({"w": torch.ones(3)}, "x.safetensors", "kx", {}, weights_dir=elsewhere)
    assert "old" in readme.read_text()
    cache.ship({"w": torch.ones(3)}, "a.safetensors", "ka", {}, weights_dir=repo / "weights")
    cache.ship({"w": torch.ones(3)}, "b.safetensors", "kb", {}, weights_dir=repo / "weights")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert text.split("<!-- shipped:begin -->\n")[1].split("\n<!-- shipped:end -->")[0] == \
        cache.shipped_summary(repo / "weights")
    assert "2 files" in text and "| a | - | 1 |" in text and "| b | - | 1 |" in text
    cache.unship("a.safetensors", weights_dir=repo / "weights")
    text = readme.read_text()
    assert "1 file," in text and "| a | - |" not in text and "| b | - | 1 |" in text



def test_a_training_stage_ships_by_key_replaces_its_last_and_goes_when_its_model_ships(tmp_path, monkeypatch):
    """A training longer than a session ships a stage into weights/ as safetensors (its buffer dropped), found by key with its
    SHA-256 checked; a later stage of the same key replaces the earlier file; the README block counts it; unshipping
    removes file and entry, and a stage of another key stays."""
    from interpretgan import paths

    repo = tmp_path / "repo"
    weights = repo / "weights"
    weights.mkdir(parents=True)
    (repo / "README.md").write_text("<!-- shipped:begin -->\n<!-- shipped:end -->\n")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setattr(paths, "SHIPPED_WEIGHTS_DIR", weights)
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    cache.ship({"w": torch.ones(3)}, "done.safetensors", "kd", {}, weights_dir=weights)
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 10, "buffer": torch.ones(100, 3, 8, 8)}
    cache.ship_stage(state, "m-old.stage.safetensors", "km", {"epoch": 10, "epochs": 38}, weights_dir=weights)
    cache.ship_stage({**state, "epoch": 20}, "m.stage.safetensors", "km", {"epoch": 20, "epochs": 38}, weights_dir=weights)
    cache.ship_stage(state, "other.stage.safetensors", "ko", {"epoch": 10, "epochs": 38}, weights_dir=weights)
    assert sorted(p.name for p in weights.glob("*.stage.safetensors")) == ["m.stage.safetensors", "other.stage.safetensors"]
    f, info = cache.shipped_stage("km", weights)
    assert f.name == "m.stage.safetensors" and info["epoch"] == 20 and cache.shipped_stage("kx", weights) is None
    saved = cache.load_stage(f)
    assert saved["buffer"] is None and saved["epoch"] == 20 and torch.equal(saved["model"]["w"], torch.arange(4.0))
    assert cache.shipped("kd", weights) is not None  # the finished weights are untouched
    text = (repo / "README.md").read_text()
    assert "1 file and 2 training stages" in text and "| m: a training stage (epoch 20 of 38, resumable)" in text
    f.write_bytes(f.read_bytes() + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        cache.shipped_stage("km", weights)
    assert cache.unship_stage("km", weights) and not cache.unship_stage("km", weights)
    assert not f.exists() and cache.shipped_stage("ko", weights) is not None
    assert "1 file and 1 training stage," in (repo / "README.md").read_text()
    cache.unship_stage("ko", weights)
    assert "stages" not in cache.read_manifest(weights) and "1 file, " in (repo / "README.md").read_text()


def _ship_many(weights_dir: str, prefix: str, n: int) -> None:
    for k in range(n):
        cache.ship({"w": torch.zeros(2)}, f"{prefix}{k}.safetensors", f"{prefix}{k}", {}, weights_dir=Path(weights_dir))


def test_two_processes_shipping_at_once_keep_every_manifest_entry(tmp_path, monkeypatch):
    """Table 3's models train one per core and each ships when it finishes: the manifest's read-modify-write is
    locked, so two processes shipping at the same time lose no entry."""
    import multiprocessing as mp

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ship_many, args=(str(tmp_path), prefix, 40)) for prefix in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(cache.read_manifest(tmp_path)["files"]) == 80
