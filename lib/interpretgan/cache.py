"""The artifact cache: every result stored under a key made from every setting that changes it.

Who should use it: the builders in :mod:`interpretgan.zoo` (and later the GAN fitting), never a
notebook directly. A changed setting gives a new key, so a stale model is never loaded.

- ``entry(kind, settings)``: the folder ``<artifacts>/<kind>/<key>/`` for those settings, with a
  ``settings.json`` beside the files so a human can see what a folder holds.
- ``atomic_path(path)``: write to a temporary file, then rename, so a killed run leaves either the
  old file or the new one, never a broken one.
- Checkpoints are ``torch.save`` files read back with ``weights_only=True`` (never unpickled), or
  safetensors. :func:`read_checkpoint` (what resuming and cache lookups use) moves a file that safe
  loading refuses aside to ``<name>.refused`` with a warning naming it, and the entry is rebuilt.
- Files are written readable by everyone the umask allows (0644 by default), safetensors included.
- Shipped weights: ``weights/MANIFEST.json`` maps file names to their cache key, settings and
  SHA-256; :func:`shipped` returns a file only when its key matches and its hash checks out.
- Training stages: a training longer than a session ships a resumable checkpoint into ``weights/`` as
  ``<model>.stage.safetensors`` (:func:`ship_stage`, recorded under the manifest's ``stages``), which a later session on another machine,
  without the artifact folder, resumes from (:func:`shipped_stage`); the finished model's ship removes it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from . import paths

MANIFEST = "MANIFEST.json"


def settings_key(settings: dict[str, Any]) -> str:
    """A 16-hex-digit key from a JSON-serialisable settings dict (order of keys does not matter)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entry_folder(kind: str, settings: dict[str, Any]) -> Path:
    """Where :func:`entry` keeps ``settings``' cache folder, without creating it."""
    return paths.artifacts_root() / kind / settings_key(settings)


def entry(kind: str, settings: dict[str, Any]) -> Path:
    """The cache folder for ``settings`` under ``<artifacts>/<kind>/``, created with its settings.json."""
    folder = entry_folder(kind, settings)
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "settings.json"
    if not info.exists():
        write_json(info, settings)
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
        os.chmod(path, 0o666 & ~_umask())  # safetensors writes 0600; keep every file like the rest
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a checkpoint (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class CheckpointError(RuntimeError):
    """A checkpoint file that safe loading refuses (it holds Python objects) or cannot read; names the file."""


class RefusedCheckpointWarning(UserWarning):
    """A checkpoint was refused and moved aside; what it held is rebuilt."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code (weights_only=True). With
    ``mmap`` its tensors stay in the file until read (for a caller that only wants its numbers, such as the epoch).
    Raises :class:`CheckpointError` naming the file when safe loading refuses it or it cannot be read."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} was refused as unsafe: it holds Python objects that safe loading "
                              f"(weights_only=True) will not unpickle; this package never writes such files. "
                              f"Delete it (or let the package move it aside and rebuild)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any] | None:
    """:func:`load_checkpoint`, or None when the file is missing or refused: a refused file is moved aside to
    ``<name>.refused`` (a :class:`RefusedCheckpointWarning` names it and why), so the caller rebuilds it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, map_location, mmap=mmap)
    except CheckpointError as err:
        return _refused(path, err)


def _refused(path: Path, err: CheckpointError) -> None:
    """Move the refused cache file ``path`` aside to ``<name>.refused`` with a :class:`RefusedCheckpointWarning`
    naming it and why, so that its caller rebuilds it; returns None (what the readers return for it)."""
    aside = path.with_name(path.name + ".refused")
    os.replace(path, aside)
    warnings.warn(f"{err}; moved aside to {aside.name} and rebuilding", RefusedCheckpointWarning, stacklevel=3)


def save_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


class WeightsError(CheckpointError):
    """A file that should hold safetensors weights cannot be read as such (the message names it and what it holds)."""


def describe_file(path: str | os.PathLike) -> str:
    """What a file holds, told from its first bytes, for error messages about files that should be safetensors:
    a zip archive (what ``torch.save`` writes), a Python pickle, JSON text, an empty file, or its size."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    if not head:
        return "an empty file"
    if head[:4] == b"PK\x03\x04":
        return f"a zip archive of {size:,} bytes (what torch.save writes), not safetensors"
    if head[:1] == b"\x80":
        return f"a Python pickle of {size:,} bytes, not safetensors"
    if head[:1] in (b"{", b"["):
        return f"{size:,} bytes of JSON text, not safetensors"
    claimed = int.from_bytes(head.ljust(8, b"\0"), "little")
    if claimed + 8 > size:
        return f"{size:,} bytes whose first 8 claim a {claimed:,}-byte header (truncated, or not safetensors)"
    return f"{size:,} bytes"


def load_weights(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
                 expect: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict, floating tensors cast to ``dtype`` (None keeps them). Raises
    :class:`WeightsError` naming the file and what it holds when it is not safetensors, or lacks a tensor
    named in ``expect``."""
    try:
        sd = load_file(str(path))
    except Exception as exc:  # safetensors' SafetensorError, or an OSError from the file system
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path} cannot be read as safetensors weights: it holds {describe_file(path)} "
                           f"({detail})") from None
    missing = [k for k in expect if k not in sd]
    if missing:
        raise WeightsError(f"{path} lacks the tensors {missing} (it holds {sorted(sd)[:8]})")
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    return sd


def read_weights(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
                 expect: tuple[str, ...] = ()) -> dict[str, torch.Tensor] | None:
    """:func:`load_weights` for a cache entry, or None when the file is missing or refused: a refused file is moved
    aside to ``<name>.refused`` (a :class:`RefusedCheckpointWarning` names it and why), so the caller rebuilds it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_weights(path, dtype, expect)
    except WeightsError as err:
        return _refused(path, err)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(weights_dir: Path | None = None) -> dict[str, Any]:
    """The shipped-weights manifest: ``{"files": {name: {"key", "settings", "sha256", ...}}}``."""
    f = (weights_dir or paths.weights_dir()) / MANIFEST
    return json.loads(f.read_text()) if f.is_file() else {"files": {}}


def shipped(key: str, weights_dir: Path | None = None) -> Path | None:
    """The shipped weights file whose cache key is ``key``, or None; raises if its SHA-256 is wrong."""
    weights_dir = weights_dir or paths.weights_dir()
    for name, info in read_manifest(weights_dir)["files"].items():
        if info.get("key") == key:
            f = weights_dir / name
            if not f.is_file():
                return None
            digest = sha256_file(f)
            if digest != info["sha256"]:
                raise ValueError(f"shipped weights {f} fail their SHA-256 check ({digest} != {info['sha256']}); "
                                 f"restore the file from git or run with retrain=True")
            return f
    return None


@contextlib.contextmanager
def _manifest_lock() -> Iterator[None]:
    """Hold an exclusive lock on ``weights/MANIFEST.json``'s read-modify-write (two trainings shipping at once on
    one machine would otherwise lose an entry); a lock file in the artifact folder, no-op where ``fcntl`` is
    missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    root = paths.artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".weights-manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ship(state_dict: dict[str, torch.Tensor], name: str, key: str, settings: dict[str, Any],
         extra: dict[str, Any] | None = None, weights_dir: Path | None = None,
         dtype: torch.dtype | None = None) -> Path:
    """Write ``state_dict`` to ``weights/<name>`` and record it in the manifest (maintainers' tool)."""
    weights_dir = weights_dir or paths.weights_dir()
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    f = weights_dir / name
    save_weights(state_dict, f, metadata={"key": key})
    with _manifest_lock():
        manifest = read_manifest(weights_dir)
        manifest["files"][name] = {"key": key, "settings": settings, "sha256": sha256_file(f),
                                   "bytes": f.stat().st_size, **(extra or {})}
        write_json(weights_dir / MANIFEST, manifest)
        _refresh_readme(weights_dir)
    return f


STAGES = "stages"  # the manifest's section of training stages


def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """``obj`` (dicts, lists, numbers, strings, tensors) as JSON with each tensor moved into ``tensors`` under a
    name and left as ``{"tensor": name}``; dicts become ``{"dict": [[key, value], ...]}`` (an optimiser's state is
    keyed by integers, which JSON objects would turn into strings)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"tensor": path}
    if isinstance(obj, dict):
        return {"dict": [[k, _split_tensors(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_split_tensors`."""
    if isinstance(obj, dict):
        if "tensor" in obj:
            return tensors[obj["tensor"]]
        return {k: _join_tensors(v, tensors) for k, v in obj["dict"]}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def load_stage(path: str | os.PathLike) -> dict[str, Any]:
    """A training stage written by :func:`ship_stage`: the checkpoint dict (its ``buffer`` None)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        skeleton = json.loads(f.metadata()["checkpoint"])
    return _join_tensors(skeleton, tensors)


def ship_stage(state: dict[str, Any], name: str, key: str, info: dict[str, Any],
               weights_dir: Path | None = None) -> Path:
    """Write the training checkpoint ``state`` (a dict of :func:`save_checkpoint`; its ATTA perturbation buffer is
    dropped: a stage is taken where the buffer is reset anyway) as safetensors to ``weights/<name>`` (the tensors; the
    rest, e.g. the history, as JSON in its metadata; read back with :func:`load_stage`) and record it in the
    manifest's ``stages`` under ``key`` with ``info`` (e.g. ``epoch``, ``epochs``, ``segments``: where each run of
    epochs trained), replacing an earlier stage of that key (maintainers' tool). Returns the file."""
    weights_dir = weights_dir or paths.weights_dir()
    f = weights_dir / name
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors({**state, "buffer": None}, tensors)
    with atomic_path(f) as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "checkpoint": json.dumps(skeleton)})
    with _manifest_lock():
        manifest = read_manifest(weights_dir)
        stages = manifest.setdefault(STAGES, {})
        for old in [n for n, i in stages.items() if i.get("key") == key and n != name]:
            del stages[old]
            (weights_dir / old).unlink(missing_ok=True)
        stages[name] = {"key": key, "sha256": sha256_file(f), "bytes": f.stat().st_size, **info}
        write_json(weights_dir / MANIFEST, manifest)
        _refresh_readme(weights_dir)
    return f


def shipped_stage(key: str, weights_dir: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The shipped training stage of cache key ``key`` and its manifest entry, or None; raises if its SHA-256 is
    wrong."""
    weights_dir = weights_dir or paths.weights_dir()
    for name, info in read_manifest(weights_dir).get(STAGES, {}).items():
        if info.get("key") == key:
            f = weights_dir / name
            if not f.is_file():
                return None
            if (digest := sha256_file(f)) != info["sha256"]:
                raise ValueError(f"training stage {f} fails its SHA-256 check ({digest} != {info['sha256']}); "
                                 f"restore the file from git")
            return f, info
    return None


def unship_stage(key: str, weights_dir: Path | None = None) -> bool:
    """Remove the training stage of cache key ``key`` (its model has shipped); returns whether there was one."""
    weights_dir = weights_dir or paths.weights_dir()
    with _manifest_lock():
        manifest = read_manifest(weights_dir)
        names = [n for n, i in manifest.get(STAGES, {}).items() if i.get("key") == key]
        for name in names:
            del manifest[STAGES][name]
            (weights_dir / name).unlink(missing_ok=True)
        if names:
            if not manifest[STAGES]:
                del manifest[STAGES]
            write_json(weights_dir / MANIFEST, manifest)
            _refresh_readme(weights_dir)
    return bool(names)


def _refresh_readme(weights_dir: Path) -> None:
    """After a ship or unship into the repository's own ``weights/``, regenerate the README's shipped-weights block
    (a training that ships at its end once left the block stale, and CI failed on it); other folders: nothing."""
    readme = paths.REPO_ROOT / "README.md"
    if Path(weights_dir).resolve() != paths.SHIPPED_WEIGHTS_DIR.resolve() or not readme.is_file():
        return
    try:
        write_readme_summary(readme, weights_dir)
    except ValueError:  # a README without the block: nothing to keep up to date
        pass


def annotate_shipped(name: str, fields: dict[str, Any], weights_dir: Path | None = None) -> None:
    """Set ``fields`` in the manifest entry of ``weights/<name>`` (e.g. a measured evaluation beside the weights it
    measured; maintainers' tool); KeyError when the manifest has no such file."""
    weights_dir = weights_dir or paths.weights_dir()
    with _manifest_lock():
        manifest = read_manifest(weights_dir)
        if name not in manifest["files"]:
            raise KeyError(f"{name} is not in {weights_dir / MANIFEST}")
        manifest["files"][name].update(fields)
        write_json(weights_dir / MANIFEST, manifest)


def unship(name: str, weights_dir: Path | None = None) -> None:
    """Remove ``weights/<name>`` and its manifest entry (maintainers' tool: weights no setting uses any more);
    KeyError when the manifest has no such file."""
    weights_dir = weights_dir or paths.weights_dir()
    with _manifest_lock():
        manifest = read_manifest(weights_dir)
        del manifest["files"][name]
        write_json(weights_dir / MANIFEST, manifest)
        _refresh_readme(weights_dir)
    (weights_dir / name).unlink(missing_ok=True)


def shipped_summary(weights_dir: Path | None = None) -> str:
    """What ``weights/`` ships, from its manifest, as a Markdown table (the README's block between
    ``<!-- shipped:begin -->`` and ``<!-- shipped:end -->`` is this text; ``python -m interpretgan.cache
    --write-readme`` rewrites it): one row per model or group of generators, with file counts and sizes."""
    import re

    manifest = read_manifest(weights_dir)
    files, stages = manifest["files"], manifest.get(STAGES, {})
    groups: dict[str, list] = {}
    for name, info in sorted(files.items()):
        m = re.match(r"(.+)-interpretgan-([a-z0-9]+)((?:-x\d+)?(?:-inverter)?(?:-warm)?)\.safetensors$", name)
        if m:
            base, layer, suffix = m.groups()
            what = {"": "InterpretGAN generators fitted from nothing", "-inverter": "pixel-loss inverters",
                    "-warm": "InterpretGAN generators warm-started from the prior (the defaults)"}.get(
                suffix, f"InterpretGAN generators at {suffix[2:]}x the images (scaling curve)")
            key = f"{base}: {what}"
        else:
            layer, key = None, name.removesuffix(".safetensors")
        groups.setdefault(key, []).append((layer, info))
    total = sum(info["bytes"] for info in (*files.values(), *stages.values()))
    lines = [f"{len(files)} file{'' if len(files) == 1 else 's'}"
             + (f" and {len(stages)} training stage{'' if len(stages) == 1 else 's'}" if stages else "")
             + f", {total / 2**20:.1f} MiB in all (limit 160 MiB).", "",
             "| weights | layers | files | MiB |", "| --- | --- | --- | --- |"]
    for key, items in groups.items():
        layers = ", ".join(layer for layer, _ in items if layer) or "-"
        size = sum(info["bytes"] for _, info in items) / 2**20
        lines.append(f"| {key} | {layers} | {len(items)} | {size:.1f} |")
    for name, info in sorted(stages.items()):
        lines.append(f"| {name.removesuffix('.stage.safetensors')}: a training stage (epoch {info.get('epoch', '?')} "
                     f"of {info.get('epochs', '?')}, resumable) | - | 1 | {info['bytes'] / 2**20:.1f} |")
    return "\n".join(lines)


def readme_with_summary(readme: Path | None = None, weights_dir: Path | None = None) -> tuple[str, str]:
    """The README's text as it is and as it would be with its shipped-weights block generated from the manifest."""
    return paths.readme_with_block(readme, "shipped", shipped_summary(weights_dir))


def write_readme_summary(readme: Path | None = None, weights_dir: Path | None = None) -> bool:
    """Rewrite the README's shipped-weights block from the manifest; returns whether it changed."""
    readme = readme or paths.REPO_ROOT / "README.md"
    text, new = readme_with_summary(readme, weights_dir)
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m interpretgan.cache``: print the shipped-weights table; ``--write-readme`` writes it into the
    README's block, ``--check`` fails (exit status 1) when that block is stale. Nothing is written without
    ``--write-readme``."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m interpretgan.cache",
        description="The shipped weights (weights/MANIFEST.json) as the README's Markdown table. Without options it "
                    "prints the table and says whether the README's block between <!-- shipped:begin --> and "
                    "<!-- shipped:end --> is up to date; it writes nothing.")
    ap.add_argument("--write-readme", action="store_true",
                    help="rewrite the README's shipped-weights block from the manifest (a maintainer's step after "
                         "shipping weights)")
    ap.add_argument("--check", action="store_true", help="exit with status 1 when the README's block is stale")
    ap.add_argument("--readme", type=Path, default=paths.REPO_ROOT / "README.md", metavar="PATH",
                    help="the README to read or write (default: the repository's README.md)")
    args = ap.parse_args(argv)
    if args.write_readme and args.check:
        ap.error("--write-readme and --check do not go together: --check only reads")
    if args.write_readme:
        print(f"{args.readme} updated" if write_readme_summary(args.readme) else f"{args.readme} already up to date")
        return 0
    text, new = readme_with_summary(args.readme)
    print(shipped_summary())
    if new == text:
        print(f"\n{args.readme}: its shipped-weights block is up to date")
        return 0
    print(f"\n{args.readme}: its shipped-weights block is stale; run python -m interpretgan.cache --write-readme")
    return 1 if args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
