"""Run the notebooks in order, headlessly, with papermill; record each one's wall time.

Who should use it: ``make reproduce`` (``python -m interpretgan.reproduce``). Executed copies go to
``<artifacts>/notebooks/`` (``--inplace`` writes the outputs back into ``notebooks/``, which is how
the committed notebooks are made; ``--executed`` writes ``notebooks/executed/<name>.<profile>.ipynb``, how a
run of another profile is committed beside them, and refuses to replace a committed copy without ``--force``);
times go to ``<artifacts>/reproduce_times.json``.

Every notebook papermill writes is then tidied (:func:`tidy_notebook`): no path of the machine that ran it in its
metadata, the parameters it really ran with (the profile included, which reaches the kernel through
``INTERPRETGAN_PROFILE``), each text output as a reader sees it, and large pictures re-encoded.
``--tidy PATH ...`` applies the same to notebooks already written (the committed ones) without running them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from . import paths
from .fast import machine
from .cache import write_json
from .profiles import PROFILES
from .progress import TEXT_ENV

NOTEBOOKS = ("01_train", "02_attack", "03_fit_interpretgan", "04_visualize", "05_diagnose", "06_pooling", "07_celeba",
             "08_your_model")
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


#: PNG outputs above this many bytes are re-encoded (:func:`shrink_images`); smaller plots stay as matplotlib drew them.
SHRINK_ABOVE = 100_000
#: An image with more distinct colours than this is photographic (the face grids of 04 and 07): JPEG. One with fewer
#: (plots, digit grids: anti-aliased text and grey strokes, a few hundred colours) becomes a 256-colour PNG.
PHOTO_COLORS = 4096
#: JPEG quality of photographic outputs: the faces keep their detail (mean error about 1/255) at a fifth of the PNG.
JPEG_QUALITY = 85
#: The largest error (in 1/255) a 256-colour palette may make on any pixel's channel; else the PNG stays full-colour.
PALETTE_MAX_ERROR = 8


def _reencode(png: bytes) -> tuple[str, bytes] | None:
    """A smaller encoding of the PNG ``png``: ``("image/png", palette PNG)`` for few colours (at most
    :data:`PALETTE_MAX_ERROR` off on any channel), ``("image/jpeg", ...)`` for photographic pictures; None when
    nothing smaller is found or the picture has real transparency."""
    import io

    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(png))
    if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < 255:
        return None  # transparency: neither a palette nor JPEG keeps it as drawn
    rgb = im.convert("RGB")
    out = io.BytesIO()
    if rgb.getcolors(PHOTO_COLORS) is None:
        rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        mime = "image/jpeg"
    else:
        pal = rgb.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        error = np.abs(np.asarray(pal.convert("RGB"), dtype=np.int16) - np.asarray(rgb, dtype=np.int16)).max()
        (pal if error <= PALETTE_MAX_ERROR else rgb).save(out, "PNG", optimize=True)
        mime = "image/png"
    data = out.getvalue()
    return (mime, data) if len(data) < 0.9 * len(png) else None


def shrink_images(nb, above: int = SHRINK_ABOVE) -> int:
    """Re-encode every PNG output larger than ``above`` bytes (:func:`_reencode`): photographic pictures as JPEG
    (quality :data:`JPEG_QUALITY`), the rest as 256-colour PNGs. Modifies ``nb`` in place; returns the bytes saved
    (decoded). A second pass changes nothing (a palette PNG is re-encoded only if that shrinks it by 10%).

    At 100 dpi matplotlib's PNGs of 07's face grids reached 1.8 MB each (07 was 7.9 MB); as JPEG they are a fifth
    of that, and 04's digit grids lose half their bytes in a palette of 256 colours (at most 1/255 off)."""
    import base64

    saved = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            png = data.get("image/png")
            if not png:
                continue
            raw = base64.b64decode(png)
            if len(raw) <= above:
                continue
            new = _reencode(raw)
            if new is None:
                continue
            mime, blob = new
            del data["image/png"]
            data[mime] = base64.b64encode(blob).decode("ascii")
            saved += len(raw) - len(blob)
    return saved


def _repo_relative(path) -> str | None:
    """``path`` relative to the repository root (POSIX), or None when it lies outside it: a stored notebook names no
    folder of the machine that ran it."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return None


def tidy_notebook(nb, profile: str, parameters: dict | None = None) -> dict:
    """What a stored run keeps, in place on ``nb`` (a papermill output): ``metadata.papermill``'s input and output
    paths relative to the repository (None outside it), its ``parameters`` the ones the run really had (``profile``,
    which reaches the kernel through ``INTERPRETGAN_PROFILE`` and so is not among papermill's, plus ``parameters``),
    the text outputs as drawn (:func:`squash_streams`) and large pictures re-encoded (:func:`shrink_images`).
    Returns what changed: ``{"outputs_removed": n, "image_bytes_saved": n}``. A second pass changes nothing."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    meta = nb.metadata.setdefault("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = _repo_relative(meta[key])
    meta["parameters"] = {**(meta.get("parameters") or {}), **(parameters or {}), "profile": profile}
    return {"outputs_removed": squash_streams(nb), "image_bytes_saved": shrink_images(nb)}


def profile_of(path) -> str | None:
    """The profile a notebook's file name says (``notebooks/executed/<name>.<profile>.ipynb``), else None."""
    parts = Path(path).name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in PROFILES else None


def tidy_file(path, profile: str, parameters: dict | None = None) -> dict:
    """:func:`tidy_notebook` on the notebook file ``path``, written back only when something changed."""
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    report = tidy_notebook(nb, profile, parameters)
    if nbformat.writes(nb) != before:
        nbformat.write(nb, str(path))
    return report


#: A text progress bar's last frame: its description, the count and the elapsed time (``[mm:ss<`` or ``[h:mm:ss<``).
_BAR = r"^(?P<desc>[^\n|]*?):?\s*\d+%\|[^|]*\|\s*\d+/\d+\s*\[(?P<elapsed>[\d:]+)<"
#: Where the README holds :func:`committed_runs_table`.
RUNS_BEGIN, RUNS_END = "<!-- runs:begin -->", "<!-- runs:end -->"


def _seconds(clock: str) -> int:
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total


def committed_runs_table(root=None, loops: int = 3, at_least: int = 10) -> str:
    """The committed notebooks' own record of their runs as a Markdown table (the README's block between
    :data:`RUNS_BEGIN` and :data:`RUNS_END`; ``python -m interpretgan.reproduce --write-readme`` writes it): for each
    of ``notebooks/*.ipynb`` and ``notebooks/executed/*.ipynb`` under ``root`` (default: the repository), the profile
    and wall time papermill recorded (``metadata.papermill``), the day it finished, and its ``loops`` longest progress
    bars of at least ``at_least`` seconds (each bar's stored last frame)."""
    root = Path(root) if root is not None else paths.REPO_ROOT
    lines = ["| committed notebook | profile | wall time | finished (UTC) | longest loops (their bars' last frames) |",
             "| --- | --- | --- | --- | --- |"]
    for path in sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "notebooks" / "executed").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        run = nb.metadata.get("papermill", {})
        if "duration" not in run:
            continue
        bars = []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    matches = (re.match(_BAR, line) for line in out.text.split("\n"))
                    bars += [(_seconds(m["elapsed"]), m["desc"].strip()) for m in matches if m]
        longest = sorted((b for b in bars if b[0] >= at_least), key=lambda b: -b[0])[:loops]
        seconds = float(run["duration"])
        wall = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        lines.append(f"| `{path.relative_to(root).as_posix()}` | {run.get('parameters', {}).get('profile', '?')} | "
                     f"{wall} | {str(run.get('end_time', '?'))[:10]} | "
                     f"{', '.join(f'{desc} {t} s' for t, desc in longest) or '-'} |")
    return "\n".join(lines)


def write_readme_runs(readme=None) -> bool:
    """Rewrite the README's committed-runs block from the committed notebooks; returns whether it changed."""
    text, new = paths.readme_with_block(readme, "runs", committed_runs_table())
    if new != text:
        Path(readme or paths.REPO_ROOT / "README.md").write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="default", choices=tuple(PROFILES))
    ap.add_argument("--inplace", action="store_true", help="write outputs back into notebooks/")
    ap.add_argument("--executed", action="store_true",
                    help="write notebooks/executed/<name>.<profile>.ipynb (a committed run of another profile, kept "
                         "out of nbval's collection)")
    ap.add_argument("--force", action="store_true",
                    help="with --executed: replace a committed copy that exists (refused without it)")
    ap.add_argument("--only", nargs="*", help="notebook names (e.g. 01_train) to run; default: all that exist")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="extra parameter passed to every notebook")
    ap.add_argument("--tidy", nargs="+", metavar="PATH",
                    help="run nothing: tidy these executed notebooks as a run's output is tidied (relative paths and "
                         "the real parameters in their metadata, text outputs as drawn, large pictures re-encoded); "
                         "the profile is the one in a name <name>.<profile>.ipynb, else --profile")
    ap.add_argument("--write-readme", action="store_true",
                    help="run nothing: rewrite the README's table of committed runs (profile, wall time, longest "
                         "loops) from the committed notebooks' own records")
    args = ap.parse_args(argv)
    if args.write_readme:
        if args.tidy or args.inplace or args.executed or args.only or args.parameter:
            ap.error("--write-readme runs nothing: it does not go with --tidy, --inplace, --executed, --only or -p")
        print("README updated" if write_readme_runs() else "README already up to date")
        return 0
    if args.tidy:
        if args.inplace or args.executed or args.only or args.parameter:
            ap.error("--tidy runs nothing: it does not go with --inplace, --executed, --only or -p")
        for path in args.tidy:
            report = tidy_file(path, profile_of(path) or args.profile)
            print(f"{path}: {report['outputs_removed']} outputs merged, {report['image_bytes_saved']:,} image bytes "
                  f"saved", flush=True)
        return 0
    if args.inplace and args.executed:
        ap.error("--inplace and --executed write to different places: choose one")
    if args.force and not args.executed:
        ap.error("--force only applies to --executed (it allows replacing a committed copy)")
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
    if args.executed and not args.force:
        existing = [nb_dir / "executed" / f"{n}.{args.profile}.ipynb" for n in names]
        existing = [p.relative_to(paths.REPO_ROOT).as_posix() for p in existing if p.exists()]
        if existing:
            ap.error(f"--executed would replace the committed {', '.join(existing)}; add --force to replace "
                     f"{'it' if len(existing) == 1 else 'them'} (git keeps the old copy)")
    if args.inplace:
        print(f"--inplace: the outputs of {', '.join(names)} are written back into notebooks/ (the committed "
              f"copies)", flush=True)
    for name in names:
        src = nb_dir / f"{name}.ipynb"
        if args.executed:
            dst = nb_dir / "executed" / f"{name}.{args.profile}.ipynb"
            dst.parent.mkdir(exist_ok=True)
            if dst.exists():
                print(f"   replacing the committed {dst.relative_to(paths.REPO_ROOT).as_posix()} (--force)", flush=True)
        else:
            dst = src if args.inplace else out_dir / f"{name}.ipynb"
        print(f"== {name} ({args.profile}) -> {dst}", flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=KERNEL, cwd=str(nb_dir),
                            progress_bar=False, log_output=False)
        times[name] = round(time.perf_counter() - t0, 1)
        tidy_file(dst, args.profile, params)
        print(f"   {times[name]:.0f} s", flush=True)
    record = {"profile": args.profile, "seconds": times, "total_seconds": round(sum(times.values()), 1),
              "shipped_weights": str(paths.weights_dir()), "machine": machine()}
    write_json(paths.artifacts_root() / "reproduce_times.json", record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
