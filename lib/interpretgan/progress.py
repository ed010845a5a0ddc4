"""Progress bars for the package's long loops.

Who should use it: every loop of the library (``from .progress import tqdm``). In JupyterLab the bars are
widgets (``tqdm.auto``). A headless run (``make reproduce``, which sets ``INTERPRETGAN_TEXT_PROGRESS=1``)
gets plain-text bars instead: a widget's stored output keeps its first frame ("0/N"), text keeps the last,
so a committed notebook shows each loop finished.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto
from tqdm.std import tqdm as _text

TEXT_ENV = "INTERPRETGAN_TEXT_PROGRESS"


def headless() -> bool:
    """Whether this is a headless run (``$INTERPRETGAN_TEXT_PROGRESS`` is 1: ``make reproduce``), whose stored
    outputs are read without a kernel: text bars, and a static picture beside every widget."""
    return os.environ.get(TEXT_ENV, "").strip() in ("1", "true", "yes")


def tqdm(*args, **kwargs):
    """A ``tqdm`` bar: text when ``$INTERPRETGAN_TEXT_PROGRESS`` is 1, else ``tqdm.auto``'s choice."""
    if headless():
        kwargs.setdefault("delay", 0.5)  # no "0/N" first frame: the first line printed already shows progress
        return _text(*args, **kwargs)
    return _auto(*args, **kwargs)
