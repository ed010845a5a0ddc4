"""Table 3 on every CIFAR-10 test image, model by model, recorded beside the shipped weights.

Who should use it: maintainers shipping the CIFAR-10 models of ``06_pooling``'s Table 3 (ATTA-1 + TRADES, VGG16
and the Wide ResNet, max and average pooling, several seeds), and readers who want the full-test-set numbers behind
the README without re-running hours of attacks. Each model takes about 17 minutes (VGG16) to 23 (the WRN-10-2) on one
core of an AMX Xeon, about 47 for the WRN-10-2 on an AMD EPYC (measured; PGD-100 on 10,000 images is most of it; an
interrupted run resumes), and the models train over several sessions whose artifact folders do not survive; so each
model's evaluation is written into its entry of ``weights/MANIFEST.json`` (key ``"table3"``) as soon as it is
measured, and the README's Table 3 is generated from those records::

    OMP_NUM_THREADS=1 taskset -c 0 python -m interpretgan.table3 wrn:max:0   # one per core, side by side
    OMP_NUM_THREADS=1 taskset -c 1 python -m interpretgan.table3 wrn:avg:0
    python -m interpretgan.table3 --pairs        # transfer and worst case of each seed pair with both recorded
    python -m interpretgan.table3 --write-readme # the README's block between <!-- table3:begin/end -->

A record (fractions in [0, 1], 4 decimals): ``accuracy`` (clean and each attack of ``STUDY_ATTACKS["cifar10"]`` at
eps 0.031, every test image, exactly what ``06_pooling -p cifar_test all`` computes, through the same cache entries),
``masking`` (on a fixed random ``n_apgd`` of the test images: white-box PGD-20, APGD-CE and APGD-DLR at the profile's
``cifar_apgd_steps``, and, once its seed pair is recorded, PGD-20 transferred from the other pooling and the worst
case over every attack), ``index_change`` (max pooling: per pooling module, the share of windows whose argmax moves
between natural and PGD-20 images with its 95% interval, and the share of untied windows), ``test_images``, ``data``
(which CIFAR-10), ``minutes`` and ``evaluated_on``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from . import cache, fast, paths
from .data import cifar10_source, load
from .models import POOLINGS
from .profiles import get_profile
from .robustness import (PAPER_TABLE3, STUDY_ATTACKS, STUDY_EPS, apgd_cached, compare_poolings, evaluate_cached,
                         masking_positions, seed_summary, transfer)
from .zoo import classifier, shipped_name

ATTACKS = STUDY_ATTACKS["cifar10"]
EPS = STUDY_EPS["cifar10"]
KEY = "table3"  # a shipped model's record in the manifest


def parse_spec(spec: str) -> tuple[str, str, int]:
    """``"vgg16:max:0"`` -> ``("vgg16", "max", 0)``; ValueError naming the allowed values."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in POOLINGS or not parts[2].isdigit():
        raise ValueError(f"a Table 3 model is arch:pooling:seed with pooling one of {list(POOLINGS)}, "
                         f"e.g. wrn:avg:1; got {spec!r}")
    return parts[0], parts[1], int(parts[2])


def _model(arch: str, pooling: str, seed: int, profile: str, data_root: str | None, exact: bool | None):
    """The model as :func:`interpretgan.zoo.classifier` loads it (the cache's fp32 copy when there is one, else the
    shipped fp16 weights: both have the same key, so the same evaluation cache entries), its info, and its file name
    in the manifest; FileNotFoundError when it is not shipped (this records evaluations of shipped weights only, and
    never trains)."""
    from .zoo import classifier_settings

    kw = dict(pooling=pooling, training="atta", seed=seed, data_root=data_root, exact=exact, dataset="cifar10",
              arch=arch)
    key = cache.settings_key(classifier_settings(profile, pooling, "atta", seed, exact, "cifar10", arch, data_root))
    names = [n for n, entry in cache.read_manifest()["files"].items() if entry.get("key") == key]
    if not names:
        raise FileNotFoundError(f"cifar10 {arch} {pooling} seed {seed} ({profile} profile) is not shipped in "
                                f"{paths.weights_dir()}: train and ship it first (python -m interpretgan.zoo "
                                f"cifar10:{arch}:{pooling}:atta:{seed})")
    model, info = classifier(profile, progress=False, **kw)
    return model, info, names[0]


def _test_split(data_root: str | None, n_test: int | None):
    split = load("cifar10", "test", data_root)
    return split if n_test is None else split.subset(n_test)


def _full_evaluation(model, info, split, progress: bool):
    """Clean and every Table 3 attack on ``split``, PGD-20's images kept (the cache entry 06 -p cifar_test all uses)."""
    return evaluate_cached(model, info, split, list(ATTACKS), EPS, keep=["pgd20"], progress=progress)


def _index_change(model, split, x_adv: torch.Tensor) -> dict[str, list[float]]:
    from .diagnosis import maxpool_index_change

    change = maxpool_index_change(model, split.tensors()[0], x_adv)
    return {name: [round(float(r.changed), 4), round(float(r.changed_low), 4), round(float(r.changed_high), 4),
                   round(float(r.changed_untied), 4)] for name, r in change.iterrows()}


def _minutes(*seconds: float | None) -> float | None:
    """The minutes of a step's runs in all (their seconds as the cache recorded them, an interrupted run's earlier
    processes included), or None when any came from a cache entry written before runs were timed."""
    return None if any(s is None for s in seconds) else round(sum(seconds) / 60, 1)


def record_model(arch: str, pooling: str, seed: int, profile: str = "default", data_root: str | None = None,
                 exact: bool | None = None, n_test: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate the shipped CIFAR-10 model ``arch`` / ``pooling`` / ``seed`` on every test image (``n_test``: a fixed
    random subset instead, for tests) and write its record into its manifest entry; returns the record (see the
    module's docstring)."""
    p = get_profile(profile)
    model, info, name = _model(arch, pooling, seed, profile, data_root, exact)
    threads = torch.get_num_threads()  # before fast.machine(), which sets them to the cores this process may use
    split = _test_split(data_root, n_test)
    ev = _full_evaluation(model, info, split, progress)
    at = masking_positions(len(split), p.n_apgd)
    sub = split.take(at)
    timed = {loss: apgd_cached(model, info, sub, EPS, loss, p.cifar_apgd_steps, 0, progress, timed=True)
             for loss in ("ce", "dlr")}
    apgd = {loss: correct for loss, (correct, _) in timed.items()}
    rec = {"test_images": len(split), "data": cifar10_source(data_root), "eps": EPS,
           "accuracy": {"clean": round(ev.clean, 4), **{a: round(ev.robust[a], 4) for a in ATTACKS}},
           "masking": {"n_images": len(at), "apgd_steps": p.cifar_apgd_steps,
                       "pgd20": round(ev.correct["pgd20"][at].float().mean().item(), 4),
                       **{f"apgd_{k}": round(v.float().mean().item(), 4) for k, v in apgd.items()}},
           "minutes": {"attacks": _minutes(ev.seconds), "apgd": _minutes(*(sec for _, sec in timed.values()))},
           "evaluated_on": fast.where_it_ran(next(model.parameters()).device, info["settings"]["exact"], threads)}
    if pooling == "max":
        rec["index_change"] = _index_change(model, split, ev.adversarial["pgd20"])
    cache.annotate_shipped(name, {KEY: rec})
    return rec


def record_pair(arch: str, seed: int, profile: str = "default", data_root: str | None = None,
                exact: bool | None = None, n_test: int | None = None, progress: bool = True) -> dict[str, dict]:
    """The masking checks that need both poolings of a seed pair, added to both records (which
    :func:`record_model` must have written): accuracy on the PGD-20 images crafted on the other model
    (``masking.transfer``) and the worst case over every attack, APGD and the transfer (``masking.worst_case``), on the
    masking images. Returns ``{pooling: record}``."""
    p = get_profile(profile)
    loaded = {pool: _model(arch, pool, seed, profile, data_root, exact) for pool in POOLINGS}
    files = cache.read_manifest()["files"]
    records = {pool: files[name].get(KEY) for pool, (_, _, name) in loaded.items()}
    if any(r is None for r in records.values()):
        missing = [pool for pool, r in records.items() if r is None]
        raise ValueError(f"{arch} seed {seed}: no Table 3 record yet for {missing}: run "
                         + " ".join(f"{arch}:{pool}:{seed}" for pool in missing) + " first")
    split = _test_split(data_root, n_test)
    at = masking_positions(len(split), p.n_apgd)
    sub = split.take(at)
    evs = {pool: _full_evaluation(model, info, split, progress) for pool, (model, info, _) in loaded.items()}
    for pool, (model, info, name) in loaded.items():
        other = "avg" if pool == "max" else "max"
        moved = transfer(model, evs[other].adversarial["pgd20"][at], sub.labels, exact=info["settings"]["exact"])
        worst = moved.clone()
        for a in ATTACKS:
            worst &= evs[pool].correct[a][at]
        for loss in ("ce", "dlr"):
            worst &= apgd_cached(model, info, sub, EPS, loss, p.cifar_apgd_steps, 0, progress)
        rec = records[pool]
        rec["masking"].update(transfer=round(moved.float().mean().item(), 4),
                              worst_case=round(worst.float().mean().item(), 4))
        cache.annotate_shipped(name, {KEY: rec})
    return records


# ----------------------------------------------------------------------------------------------
# The records as tables
# ----------------------------------------------------------------------------------------------

def records(manifest: dict | None = None, profile: str = "default") -> pd.DataFrame:
    """Every shipped CIFAR-10 model of ``profile`` with a Table 3 record: one row per model (``arch``, ``pooling``,
    ``seed`` from its settings in the manifest, then the record's accuracies, masking figures, test image count,
    minutes and ``trained_on``)."""
    files = (manifest or cache.read_manifest())["files"]
    rows = []
    for name, entry in sorted(files.items()):
        settings = entry.get("settings", {})
        if KEY not in entry or settings.get("dataset") != "cifar10" or shipped_name(settings, profile) != name:
            continue
        rec = entry[KEY]
        rows.append({"arch": settings["arch"], "pooling": settings["pooling"], "seed": int(settings["seed"]),
                     **rec["accuracy"],
                     **{f"masking_{k}": v for k, v in rec["masking"].items()}, "test_images": rec["test_images"],
                     "data": rec["data"], "eval_minutes": _total(rec["minutes"]),
                     "trained_on": entry.get("trained_on", ""), "evaluated_on": rec.get("evaluated_on", ""),
                     "index_change": rec.get("index_change")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    order = df["pooling"].map({pool: i for i, pool in enumerate(POOLINGS)})
    return df.assign(_order=order).sort_values(["arch", "_order", "seed"], kind="stable").drop(columns="_order") \
        .reset_index(drop=True)


def _total(minutes: dict) -> float | None:
    """A record's evaluation minutes in all, or None when any step came from the cache untimed."""
    return None if any(v is None for v in minutes.values()) else sum(minutes.values())


def summary(manifest: dict | None = None, profile: str = "default") -> dict[str, pd.DataFrame]:
    """Table 3 from the records: ``table`` (per arch and pooling, "mean ± std (paper)" in percent, "mean (paper)"
    for one seed, and the seeds),
    ``gaps`` (avg - max per seed pair and attack, points), ``verdict`` (per arch and attack, from
    :func:`interpretgan.robustness.compare_poolings`), ``masking`` (per model, percent); empty frames when no record."""
    df = records(manifest, profile)
    if df.empty:
        return {k: pd.DataFrame() for k in ("table", "gaps", "verdict", "masking")}
    cols = ["clean", *ATTACKS]
    long = df.melt(id_vars=["arch", "pooling", "seed"], value_vars=cols, var_name="attack", value_name="accuracy")
    stats = seed_summary(long, by=("arch", "pooling"))
    table = {}
    for (arch, pool), _ in df.groupby(["arch", "pooling"], sort=False):
        row = {}
        for a in cols:
            s = stats.loc[(arch, pool, a)]
            paper = PAPER_TABLE3.get((arch, pool), {}).get(a)
            spread = f" ± {s['std']:.2f}" if s["seeds"] > 1 else ""  # one seed has no spread
            row[a] = f"{s['mean']:.2f}{spread}" + (f" ({paper:.2f})" if paper is not None else "")
        row["seeds"] = int(stats.loc[(arch, pool, "clean"), "seeds"])
        table[(arch, pool)] = row
    table = pd.DataFrame.from_dict(table, orient="index").rename_axis(["arch", "pooling"])
    wide = df.set_index(["arch", "seed", "pooling"])[cols]
    pairs = wide.unstack("pooling").dropna()
    gaps = pd.DataFrame({a: (pairs[(a, "avg")] - pairs[(a, "max")]) * 100 for a in cols}).round(2)
    verdicts = []
    for arch in df["arch"].unique():
        pooled = set(df.loc[df["arch"] == arch, "pooling"])
        if pooled == set(POOLINGS):
            verdicts.append(compare_poolings(stats, cols, prefix=(arch,)).assign(arch=arch))
    verdict = pd.concat(verdicts).rename_axis("attack").reset_index().set_index(["arch", "attack"]) if verdicts \
        else pd.DataFrame()
    mcols = [c for c in ("masking_pgd20", "masking_transfer", "masking_apgd_ce", "masking_apgd_dlr",
                         "masking_worst_case") if c in df]
    masking = df.set_index(["arch", "pooling", "seed"])[mcols].mul(100).round(1)
    masking.insert(0, "images", df.set_index(["arch", "pooling", "seed"])["masking_n_images"])
    return {"table": table, "gaps": gaps, "verdict": verdict, "masking": masking}


def _short_names(names: Iterable[str]) -> dict[str, str]:
    """Pooling module names as the README shows them: the first part (``block1.6`` -> ``block1``) where that is
    unique, else the whole name."""
    names = list(names)
    firsts = [n.split(".")[0] for n in names]
    return {n: f if firsts.count(f) == 1 else n for n, f in zip(names, firsts)}


def markdown(manifest: dict | None = None, profile: str = "default") -> str:
    """The README's Table 3 block: the table, avg - max per seed pair, the verdicts, the masking checks, the index
    change and the minutes, all from the records (generated text, never edited by hand)."""
    df, s = records(manifest, profile), summary(manifest, profile)
    if df.empty:
        return "No CIFAR-10 model has a Table 3 record yet (`python -m interpretgan.table3 ARCH:POOLING:SEED`)."
    data = "; ".join(sorted(set(df["data"])))
    images = ", ".join(f"{n:,}" for n in sorted(set(df["test_images"])))
    out = [f"Recorded for {len(df)} shipped model(s) by `python -m interpretgan.table3` ({data}; {images} test "
           f"images per model; eps 0.031, PGD step 0.003). Percent, mean ± std over seeds (paper's full-size models "
           "in brackets):", ""]
    cols = ["clean", *ATTACKS]
    out += ["| arch | pooling | seeds | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 3) + "|"]
    for (arch, pool), row in s["table"].iterrows():
        out.append(f"| {arch} | {pool} | {row['seeds']} | " + " | ".join(row[c] for c in cols) + " |")
    if not s["gaps"].empty:
        out += ["", "avg - max per seed pair (points):", "", "| arch | seed | " + " | ".join(cols) + " |",
                "| --- " * (len(cols) + 2) + "|"]
        for (arch, seed), row in s["gaps"].iterrows():
            out.append(f"| {arch} | {seed} | " + " | ".join(f"{row[c]:+.2f}" for c in cols) + " |")
    if not s["verdict"].empty:
        out += ["", "Verdict per attack (avg - max of the means against the larger seed std):", ""]
        for (arch, attack), row in s["verdict"].iterrows():
            if attack != "clean":
                out.append(f"- {arch} {attack}: {row['avg - max']:+.2f} points, {row['verdict']}")
    m = s["masking"]
    names = {"masking_pgd20": "PGD-20 white-box", "masking_transfer": "PGD-20 from the other pooling",
             "masking_apgd_ce": "APGD-CE", "masking_apgd_dlr": "APGD-DLR", "masking_worst_case": "worst case"}
    shown = [c for c in names if c in m]
    out += ["", "Gradient-masking checks (a fixed random subset of the test images, APGD at "
            f"{int(df['masking_apgd_steps'].iloc[0])} iterations; percent; '-' until the seed pair is recorded):", "",
            "| arch | pooling | seed | images | " + " | ".join(names[c] for c in shown) + " |",
            "| --- " * (len(shown) + 4) + "|"]
    for (arch, pool, seed), row in m.iterrows():
        vals = " | ".join("-" if pd.isna(row[c]) else f"{row[c]:.1f}" for c in shown)
        out.append(f"| {arch} | {pool} | {seed} | {int(row['images']):,} | {vals} |")
    changes = df[df["index_change"].notna()]
    if not changes.empty:
        out += ["", "Max-pool index change, natural against PGD-20 images (percent of windows [95% interval over "
                "images]; untied windows only after the slash):", ""]
        for r in changes.itertuples():
            short = _short_names(r.index_change)
            parts = [f"{short[n]} {v[0] * 100:.1f} [{v[1] * 100:.1f}, {v[2] * 100:.1f}] / {v[3] * 100:.1f}"
                     for n, v in r.index_change.items()]
            out.append(f"- {r.arch} seed {r.seed}: " + "; ".join(parts))
    out += ["", "Minutes per model (training as recorded in the manifest; evaluation with its APGD):", ""]
    for r in df.itertuples():
        out.append(f"- {r.arch} {r.pooling} seed {r.seed}: trained {r.trained_on or 'where not recorded'}; "
                   + (f"evaluated in {r.eval_minutes:.1f} min on {r.evaluated_on}" if pd.notna(r.eval_minutes)
                      else "evaluation read from the artifact cache (not timed by this command)"))
    return "\n".join(out)


def readme_with_table(readme: Path | None = None) -> tuple[str, str]:
    """The README's text as it is and with its Table 3 block generated from the records."""
    return paths.readme_with_block(readme, "table3", markdown())


def main(argv: list[str] | None = None) -> int:
    """``python -m interpretgan.table3 ARCH:POOLING:SEED ...``: evaluate each shipped CIFAR-10 model on every test
    image and record it in the manifest; ``--pairs`` adds the transfer and worst case to every seed pair with both
    records; ``--write-readme`` rewrites the README's Table 3 block; without arguments, print the table."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m interpretgan.table3", description=main.__doc__)
    ap.add_argument("models", nargs="*", metavar="arch:pooling:seed")
    ap.add_argument("--pairs", action="store_true", help="the masking checks of every recorded seed pair")
    ap.add_argument("--write-readme", action="store_true", help="rewrite the README's Table 3 block")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    try:
        specs = [parse_spec(m) for m in args.models]
    except ValueError as err:
        ap.error(str(err))
    for arch, pool, seed in specs:
        rec = record_model(arch, pool, seed, args.profile, args.data_root)
        print(f"{arch} {pool} seed {seed}: " + ", ".join(f"{a} {v:.2%}" for a, v in rec["accuracy"].items())
              + f" on {rec['test_images']:,} images; {rec['minutes']}", flush=True)
    if args.pairs:
        df = records(profile=args.profile)
        for (arch, seed), group in (df.groupby(["arch", "seed"]) if not df.empty else ()):
            both = set(group["pooling"]) == set(POOLINGS)
            done = "masking_worst_case" in group and group["masking_worst_case"].notna().all()
            if both and not done:
                recs = record_pair(arch, int(seed), args.profile, args.data_root)
                print(f"{arch} seed {seed}: " + "; ".join(f"{pool} transfer {r['masking']['transfer']:.2%}, worst "
                                                         f"case {r['masking']['worst_case']:.2%}"
                                                         for pool, r in recs.items()), flush=True)
    if args.write_readme:
        text, new = readme_with_table()
        if new != text:
            (paths.REPO_ROOT / "README.md").write_text(new)
        print("README.md " + ("updated" if new != text else "already up to date"))
    if not specs and not args.pairs and not args.write_readme:
        print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
