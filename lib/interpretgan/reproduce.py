"""Run the notebooks in order, headlessly, with papermill; record each one's wall time.

Who should use it: ``make reproduce`` (``python -m interpretgan.reproduce``). Executed copies go to
``<artifacts>/notebooks/`` (``--inplace`` writes the outputs back into ``notebooks/``, which is how
the committed notebooks are made; ``--executed`` writes ``notebooks/executed/<name>.<profile>.ipynb``, how a
run of another profile is committed beside them); times go to ``<artifacts>/reproduce_times.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import nbformat
import papermill as pm
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from . import paths
from .fast import machine
from .cache import write_json
from .profiles import PROFILES
from .progress import TEXT_ENV

NOTEBOOKS = ("01_train", "02_attack", "03_fit_interpretgan", "04_visualize", "05_diagnose", "06_pooling", "07_celeba")
KERNEL = "interpretgan"


def squash_streams(nb) -> int:
    """Store each cell's text output as a reader sees it: nbconvert's ``CoalesceStreamsPreprocessor`` joins
    consecutive stdout (or stderr) messages and keeps, of every line rewritten with carriage returns (a text
    progress bar's frames), only its last frame; a carriage return left at a line's end is dropped. Modifies ``nb``
    in place; returns how many outputs it removed.

    A headless run stores every frame of a text bar as its own message (03's nine baseline fits stored 3,246, 650 kB),
    which Jupyter then draws over each other; the stored notebook keeps what is drawn, not the frames.
    """
    before = sum(len(cell.get("outputs", [])) for cell in nb.cells)
    CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out.text = "\n".join(line.rstrip("\r") for line in out.text.split("\n"))
    return before - sum(len(cell.get("outputs", [])) for cell in nb.cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="default", choices=tuple(PROFILES))
    ap.add_argument("--inplace", action="store_true", help="write outputs back into notebooks/")
    ap.add_argument("--executed", action="store_true",
                    help="write notebooks/executed/<name>.<profile>.ipynb (a committed run of another profile, kept "
                         "out of nbval's collection)")
    ap.add_argument("--only", nargs="*", help="notebook names (e.g. 01_train) to run; default: all that exist")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="extra parameter passed to every notebook")
    args = ap.parse_args(argv)
    nb_dir = paths.REPO_ROOT / "notebooks"
    out_dir = paths.artifacts_root() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in NOTEBOOKS if (nb_dir / f"{n}.ipynb").is_file() and (not args.only or n in args.only)]
    times: dict[str, float] = {}
    # The profile reaches the kernels through the environment, not as an injected parameters cell: a
    # committed notebook then keeps no "profile = 'default'" cell, so nbval re-runs it at the test profile.
    os.environ["INTERPRETGAN_PROFILE"] = args.profile
    os.environ[TEXT_ENV] = "1"  # text progress bars: the stored output shows each loop finished, not its first frame
    params = dict(args.parameter)
    for name in names:
        src = nb_dir / f"{name}.ipynb"
        if args.executed:
            dst = nb_dir / "executed" / f"{name}.{args.profile}.ipynb"
            dst.parent.mkdir(exist_ok=True)
        else:
            dst = src if args.inplace else out_dir / f"{name}.ipynb"
        print(f"== {name} ({args.profile}) -> {dst}", flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=KERNEL, cwd=str(nb_dir),
                            progress_bar=False, log_output=False)
        times[name] = round(time.perf_counter() - t0, 1)
        nb = nbformat.read(str(dst), as_version=4)
        if squash_streams(nb):
            nbformat.write(nb, str(dst))
        print(f"   {times[name]:.0f} s", flush=True)
    record = {"profile": args.profile, "seconds": times, "total_seconds": round(sum(times.values()), 1),
              "shipped_weights": str(paths.weights_dir()), "machine": machine()}
    write_json(paths.artifacts_root() / "reproduce_times.json", record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
