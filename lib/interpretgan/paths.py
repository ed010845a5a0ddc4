"""Where things live: the repository root, the data root and the artifact folder.

Who should use it: every module that reads data or writes a result. Nothing here knows a
machine-specific path; everything comes from a parameter, an environment variable, or a
folder relative to the repository root.

- data root: the ``data_root`` argument, else ``$INTERPRETGAN_DATA``, else ``<repo>/data``
  (where torchvision may download MNIST when the machine is online).
- artifacts: ``$INTERPRETGAN_ARTIFACTS``, else ``<repo>/artifacts`` (ignored by git), whatever
  the working directory.
- shipped weights: ``$INTERPRETGAN_WEIGHTS``, else ``<repo>/weights`` (point it at an empty folder
  to time a cold run that trains everything).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS_DIR = REPO_ROOT / "weights"
DEFAULT_DATA_DIR = REPO_ROOT / "data"


def data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The folder holding the datasets: the argument, else $INTERPRETGAN_DATA, else <repo>/data."""
    if data_root not in (None, ""):
        return Path(data_root).expanduser().resolve()
    env = os.environ.get("INTERPRETGAN_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return DEFAULT_DATA_DIR


def artifacts_root() -> Path:
    """The artifact folder (checkpoints, adversarial sets, caches), created on first use."""
    env = os.environ.get("INTERPRETGAN_ARTIFACTS")
    root = Path(env).expanduser().resolve() if env else REPO_ROOT / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def weights_dir() -> Path:
    """The folder of shipped weights: $INTERPRETGAN_WEIGHTS, else <repo>/weights."""
    env = os.environ.get("INTERPRETGAN_WEIGHTS")
    return Path(env).expanduser().resolve() if env else SHIPPED_WEIGHTS_DIR


def readme_with_block(readme: str | os.PathLike | None, name: str, body: str) -> tuple[str, str]:
    """The README's text as it is and with the generated block ``name`` (between ``<!-- name:begin -->`` and
    ``<!-- name:end -->``) holding ``body``; ValueError when the README has no such block. ``readme``: default
    ``<repo>/README.md``. The caller writes the new text when it differs."""
    readme = Path(readme) if readme is not None else REPO_ROOT / "README.md"
    text = readme.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} block to hold the generated {name} text")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return text, f"{head}{begin}\n{body}\n{end}{tail}"
