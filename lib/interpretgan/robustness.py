"""Robust-accuracy evaluation for the pooling study (paper Tables 2 and 3), with checks for gradient masking.

Who should use it: ``06_pooling.ipynb``, and anyone comparing adversarially trained models.

- :func:`evaluate` runs several attacks on one model in one pass over the test images; PGD-k
  attacks of the same step size share one run (PGD-40 is the 40th iterate of the PGD-100 run from
  the same random start, exactly what a separate PGD-40 would return).
- :func:`evaluate_cached` adds the artifact cache (keyed by the classifier's key and every setting).
- :func:`apgd` runs torchattacks' APGD (CE or DLR loss), a maintained step-size-free attack that
  gradient masking does not fool as easily as fixed-step PGD; :func:`transfer` scores adversarial
  images crafted on one model against another (black-box transfer).
- :func:`seed_summary` and :func:`compare_poolings` turn per-seed accuracies into the table the paper
  reports, with the spread over seeds beside the means.

All accuracies are fractions in [0, 1] of the images given.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch
from torch import nn
import torchattacks
from .progress import tqdm

from . import cache, fast
from .attacks import DEFAULT_STEP, FGSM, MPGD, PGD, batch_size_for, check_epsilon, parse_attack_name, predict
from .data import load, random_positions
from .models import POOLINGS, eval_mode
from .profiles import get_profile
from .zoo import classifier, classifier_source, dataset_of



@dataclass
class Evaluation:
    """One model under several attacks: ``clean`` and ``robust[attack]`` accuracies, per-image
    correctness ``correct[name]`` (bool, "clean" included), and the adversarial images of the
    attacks named in ``keep`` (float in [0, 1], CPU)."""

    clean: float
    robust: dict[str, float]
    correct: dict[str, torch.Tensor]
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict)
    n_images: dict[str, int] = field(default_factory=dict)  # images behind each figure where they differ ("clean" too)
    positions: dict[str, torch.Tensor] = field(default_factory=dict)  # attacks run on part of the test set: where
    seconds: float | None = None  # what the run took, an interrupted run's earlier processes included (None: unknown)

    def correct_at(self, name: str, at: torch.Tensor) -> torch.Tensor:
        """Per-image correctness (bool) under ``name`` at the positions ``at`` of the test set; an attack run on a
        part of it (``positions[name]``) must cover them (ValueError naming what it missed)."""
        pos = self.positions.get(name)
        if pos is None:
            return self.correct[name][at]
        where = torch.full((max(int(at.max()), int(pos.max())) + 1,), -1, dtype=torch.long)
        where[pos] = torch.arange(len(pos))
        found = where[at]
        if (found < 0).any():
            raise ValueError(f"{name} was run on {len(pos):,} of the test images, which miss "
                             f"{int((found < 0).sum()):,} of the {len(at):,} asked for")
        return self.correct[name][found]


def _plan(attacks: Iterable[str]) -> dict[str, list[int]]:
    """Group attack names into runs: {"fgsm": [], "pgd": [ks], "mpgd": [ks]}."""
    plan: dict[str, list[int]] = {}
    for name in attacks:
        kind, steps = parse_attack_name(name)
        plan.setdefault(kind, [])
        if kind != "fgsm":
            plan[kind].append(steps)
    return plan


def evaluate(model: nn.Module, test, attacks: Iterable[str], eps: float | str, dataset: str = "mnist",
             alpha: float | None = None, keep: Iterable[str] = (), exact: bool | None = None, seed: int = 0,
             device: str | torch.device | None = None, batch_size: int | None = None,
             progress: bool = True, resume: str | Path | None = None, save_every: float = 120.0) -> Evaluation:
    """Clean and robust accuracy of ``model`` (eval mode) on the ImageSet ``test`` under ``attacks``
    (names such as ``["pgd40", "pgd100", "mpgd40", "fgsm"]``) at l_inf radius ``eps``; PGD step
    ``alpha`` defaults to the authors' value for ``dataset``. Returns an :class:`Evaluation`.

    ``resume``: a file for the work done so far, written atomically every ``save_every`` seconds with the random
    number generator's state after the last batch done; a later call with the same arguments goes on from there, so
    an interrupted run ends exactly where an uninterrupted one would. The caller removes the file once it has
    stored the result (:func:`evaluate_cached` does)."""
    attacks = [str(a).strip().lower() for a in attacks]
    eps, plan = check_epsilon(eps), _plan(attacks)
    alpha = DEFAULT_STEP[dataset] if alpha is None else alpha
    device = torch.device(device or next(model.parameters()).device)
    batch_size = batch_size_for(batch_size, device, test)
    runners = {kind: (FGSM(eps, exact=exact) if kind == "fgsm" else
                      (PGD if kind == "pgd" else MPGD)(eps, alpha=alpha, steps=max(ks), exact=exact))
               for kind, ks in plan.items()}
    keep = set(keep)
    run = {"attacks": attacks, "keep": sorted(keep), "eps": eps, "alpha": alpha, "seed": seed, "n": len(test),
           "indices_sum": int(test.indices.sum()), "batch_size": batch_size, "device": device.type,
           "exact": fast.resolve_exact(exact)}  # what a partial run must match to be taken up
    correct: dict[str, list] = {name: [] for name in ["clean", *attacks]}
    kept: dict[str, list] = {name: [] for name in keep}
    torch.manual_seed(seed)
    job = _Resumable(resume, run, save_every)
    if job.partial is not None:
        correct = {k: [v] for k, v in job.partial["correct"].items()}
        kept = {k: [v] for k, v in job.partial["kept"].items()}
        _set_rng(job.partial["rng"], device)
    with eval_mode(model):
        for b, (x, y) in job.batches(test, device, f"{len(attacks)} attacks", progress):
            correct["clean"].append((predict(model, x, exact) == y).cpu())
            for kind, atk in runners.items():
                outs = ({"fgsm": atk(model, x, y)} if kind == "fgsm" else
                        {f"{kind}{k}": v for k, v in atk.iterates(model, x, y, plan[kind]).items()})
                for name, x_adv in outs.items():
                    correct[name].append((predict(model, x_adv, exact) == y).cpu())
                    if name in keep:
                        kept[name].append(x_adv.cpu())
            if job.due(b):
                correct, kept = _joined(correct), _joined(kept)
                job.save(b, rng=_get_rng(device), correct={k: v[0] for k, v in correct.items()},
                         kept={k: v[0] for k, v in kept.items()})
    per_image = {k: torch.cat(v) for k, v in correct.items()}
    return Evaluation(clean=per_image["clean"].sum().item() / len(test),
                      robust={a: per_image[a].sum().item() / len(test) for a in attacks},
                      correct=per_image, adversarial={k: torch.cat(v) for k, v in kept.items()}, seconds=job.seconds)


def _get_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The random number generators' states the attacks draw from on ``device`` (their random starts)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _joined(lists: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Each list of per-batch tensors as one tensor (still in a list, so that batches can be appended)."""
    return {k: [torch.cat(v)] for k, v in lists.items()}


class _Resumable:
    """The batch loop of :func:`evaluate` and :func:`apgd` with a partial run saved at ``path`` (None: never):
    ``partial`` is the saved state when it was made with the same ``run`` settings (attacks, images, batch size,
    device type, precision), else None (a stale one is overwritten); :meth:`batches` goes on after its last batch;
    :meth:`due` says when ``save_every`` seconds have passed since the last save (never after the last batch)."""

    def __init__(self, path: str | Path | None, run: dict[str, Any], save_every: float):
        self.path, self.run, self.save_every = path, run, save_every
        saved = cache.read_checkpoint(path) if path is not None else None
        self.partial = saved if saved is not None and saved.get("run") == run else None
        self.start = self.partial["batches"] if self.partial is not None else 0
        self.total, self._saved_at = None, time.monotonic()
        self._began, self._before = self._saved_at, seconds_done(self.partial)

    @property
    def seconds(self) -> float:
        """Seconds of work so far: this process's and those the partial run it went on from had saved."""
        return self._before + time.monotonic() - self._began

    def batches(self, test, device: torch.device, desc: str, progress: bool):
        """``(b, (x, y))`` from the first batch not done (batches of ``run["batch_size"]``), ``b`` counting batches
        done from 1."""
        batch_size = self.run["batch_size"]
        self.total = test.n_batches(batch_size)
        rest = itertools.islice(test.batches(batch_size, device=device), self.start, None)
        bar = tqdm(rest, total=self.total, initial=self.start, desc=desc, disable=not progress)
        return enumerate(((x, y) for x, y, _ in bar), start=self.start + 1)

    def due(self, b: int) -> bool:
        return self.path is not None and b < self.total and time.monotonic() - self._saved_at >= self.save_every

    def save(self, b: int, **state: Any) -> None:
        cache.save_checkpoint({"run": self.run, "batches": b, "seconds": self.seconds, **state}, self.path)
        self._saved_at = time.monotonic()


def seconds_done(partial: dict[str, Any] | None) -> float:
    """The seconds of work a saved partial run (:func:`evaluate`'s or :func:`apgd`'s ``resume`` file, as read) had
    done: 0 without one (or from before they were saved)."""
    return float(partial.get("seconds", 0.0)) if partial is not None else 0.0


def evaluate_cached(model: nn.Module, info: dict[str, Any], test, attacks: Iterable[str], eps: float | str,
                    keep: Iterable[str] = (), seed: int = 0, progress: bool = True, **kwargs) -> Evaluation:
    """:func:`evaluate` through the artifact cache: keyed by the classifier (``info`` from
    :func:`interpretgan.zoo.classifier`), the test images, the attacks and every setting."""
    attacks, keep = [str(a).lower() for a in attacks], sorted(keep)
    dataset = dataset_of(info["settings"])
    exact = info["settings"]["exact"]
    batch_size = batch_size_for(kwargs.pop("batch_size", None), kwargs.get("device") or next(model.parameters()).device,
                             test)  # the random starts are drawn per batch
    settings = {"kind": "evaluation", "classifier": info["key"], "attacks": attacks, "eps": check_epsilon(eps),
                "alpha": kwargs.get("alpha"), "dataset": dataset, "test": test.name, "n": len(test),
                "indices_sum": int(test.indices.sum()), "keep": keep, "seed": seed, "exact": exact, "batch_size": batch_size}
    f = cache.entry("evaluations", settings) / "evaluation.pt"
    if (done := cache.read_checkpoint(f)) is not None:
        return Evaluation(**done)
    partial = f.with_name("evaluation.partial.pt")  # an interrupted run goes on from here
    ev = evaluate(model, test, attacks, eps, dataset=dataset, keep=keep, exact=exact, seed=seed, progress=progress,
                  batch_size=batch_size, resume=partial, **kwargs)
    cache.save_checkpoint({"clean": ev.clean, "robust": ev.robust, "correct": ev.correct,
                           "adversarial": ev.adversarial, "seconds": ev.seconds}, f)
    partial.unlink(missing_ok=True)
    return ev


class FastForward(nn.Module):
    """``model`` with its forward pass on the fast path (bf16 autocast, channels-last) and fp32 logits,
    for attacks from other libraries (torchattacks) that call ``model(x)`` themselves."""

    def __init__(self, model: nn.Module, exact: bool | None = None):
        super().__init__()
        self.model, self.exact = model, fast.resolve_exact(exact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fast.autocast(x.device, self.exact):
            return self.model(fast.to_memory_format(x, self.exact)).float()


def apgd(model: nn.Module, test, eps: float | str, loss: str = "ce", steps: int = 100, exact: bool | None = None,
         seed: int = 0, batch_size: int | None = None, progress: bool = True, resume: str | Path | None = None,
         save_every: float = 120.0) -> torch.Tensor:
    """Per-image correctness (bool, N) of ``model`` under torchattacks' APGD (Croce & Hein 2020) with
    the ``loss`` "ce" or "dlr", ``steps`` iterations, one restart, l_inf ``eps``. ``resume``: as in
    :func:`evaluate` (APGD seeds every batch itself, so only the batches done are kept)."""
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be one of ['ce', 'dlr'], got {loss!r}")
    device = next(model.parameters()).device
    wrapped = FastForward(model, exact).eval()
    atk = torchattacks.APGD(wrapped, norm="Linf", eps=check_epsilon(eps), steps=steps, n_restarts=1, seed=seed,
                            loss=loss)
    batch_size = batch_size_for(batch_size, device, test)
    run = {"loss": loss, "steps": steps, "eps": atk.eps, "seed": seed, "n": len(test),
           "indices_sum": int(test.indices.sum()), "batch_size": batch_size, "device": device.type,
           "exact": fast.resolve_exact(exact)}
    job = _Resumable(resume, run, save_every)
    out = [job.partial["correct"]] if job.partial is not None else []
    for b, (x, y) in job.batches(test, device, f"APGD-{loss.upper()}", progress):
        x_adv = atk(x, y)
        out.append((predict(model, x_adv, exact) == y).cpu())
        if job.due(b):
            out = [torch.cat(out)]
            job.save(b, correct=out[0])
    return torch.cat(out)


def transfer(model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, exact: bool | None = None,
             batch_size: int = 500) -> torch.Tensor:
    """Per-image correctness (bool, N) of ``model`` on adversarial images crafted against another model."""
    device = next(model.parameters()).device
    out = [(predict(model, x_adv[i:i + batch_size].to(device), exact).cpu() == labels[i:i + batch_size])
           for i in range(0, len(labels), batch_size)]
    return torch.cat(out)


def seed_summary(per_seed: pd.DataFrame, by: Iterable[str] = ("pooling",)) -> pd.DataFrame:
    """Mean, standard deviation (over seeds, ddof 1; 0 for one seed), min and max of ``accuracy`` in
    ``per_seed`` (long format: columns ``by``..., ``seed``, ``attack``, ``accuracy``), one row per
    group and attack, in percent."""
    g = per_seed.groupby([*by, "attack"], sort=False)["accuracy"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "min": g.min(), "max": g.max(),
                        "seeds": g.size()})
    out[["mean", "std", "min", "max"]] *= 100
    return out


def compare_poolings(summary: pd.DataFrame, attacks: Iterable[str], prefix: tuple = ()) -> pd.DataFrame:
    """avg minus max for each attack, in percentage points, beside the larger of the two seed
    standard deviations; ``verdict`` says whether avg > max holds here and whether the gap exceeds
    the seed spread. ``summary`` from :func:`seed_summary`; ``prefix`` selects a group (e.g. an arch)."""
    rows = []
    for atk in attacks:
        mx, av = summary.loc[(*prefix, "max", atk)], summary.loc[(*prefix, "avg", atk)]
        gap, spread = av["mean"] - mx["mean"], max(mx["std"], av["std"])
        if min(mx["seeds"], av["seeds"]) < 2:
            verdict = ("avg > max" if gap > 0 else "avg <= max here") + " (one seed: no spread to compare with)"
        elif gap > 0:
            verdict = "avg > max, beyond the seed spread" if gap > spread else "avg > max, within the seed spread"
        else:
            verdict = "avg <= max here" + (" (beyond the seed spread)" if -gap > spread else " (within the seed spread)")
        rows.append({"attack": atk, "max": mx["mean"], "avg": av["mean"], "avg - max": gap,
                     "seed std (larger)": spread, "verdict": verdict})
    return pd.DataFrame(rows).set_index("attack")


# ----------------------------------------------------------------------------------------------
# The pooling study: ATTA models with max and avg pooling over seeds (Tables 2 and 3)
# ----------------------------------------------------------------------------------------------

#: The paper's Table 2 (MNIST, eps 0.3), robust accuracy in percent.
PAPER_TABLE2 = {"max": {"pgd40": 89.33, "pgd100": 81.98, "mpgd40": 89.76, "fgsm": 95.62},
                "avg": {"pgd40": 91.56, "pgd100": 87.48, "mpgd40": 92.09, "fgsm": 95.72}}
#: The paper's Table 3 (CIFAR-10, eps 8/255), robust accuracy in percent, by (arch, pooling).
PAPER_TABLE3 = {("vgg16", "max"): {"pgd20": 46.97, "pgd100": 45.69, "mpgd20": 47.06, "fgsm": 50.46},
                ("vgg16", "avg"): {"pgd20": 48.25, "pgd100": 47.09, "mpgd20": 48.91, "fgsm": 51.64},
                ("wrn", "max"): {"pgd20": 53.08, "pgd100": 51.65, "mpgd20": 53.94, "fgsm": 57.63},
                ("wrn", "avg"): {"pgd20": 54.68, "pgd100": 52.59, "mpgd20": 55.47, "fgsm": 59.92}}
STUDY_ATTACKS = {"mnist": ("pgd40", "pgd100", "mpgd40", "fgsm"), "cifar10": ("pgd20", "pgd100", "mpgd20", "fgsm")}
#: l_inf radius per dataset: MNIST 0.3; CIFAR-10 0.031, the authors' value for 8/255 (= 0.0314).
STUDY_EPS = {"mnist": 0.3, "cifar10": 0.031}


@dataclass
class PoolingStudy:
    """ATTA models of one dataset (and arch) for both poolings and several seeds, evaluated.

    ``models``, ``infos`` and ``evaluations`` are keyed by ``(pooling, seed)``; ``per_seed`` is the
    long table (columns pooling, seed, attack, accuracy; "clean" among the attacks); ``test`` the
    evaluated ImageSet; ``seconds`` the wall time of this call."""

    dataset: str
    arch: str | None
    attacks: tuple[str, ...]
    eps: float
    test: Any
    models: dict
    infos: dict
    evaluations: dict
    per_seed: pd.DataFrame
    seconds: float


def pooling_study(profile: str = "default", dataset: str = "mnist", arch: str | None = None,
                  seeds: Iterable[int] | None = None, data_root: str | None = None, retrain: bool = False,
                  exact: bool | None = None, keep: Iterable[str] = (), progress: bool = True,
                  n_test: int | str | None = None) -> PoolingStudy:
    """Train or load (through :func:`interpretgan.zoo.classifier`) the ATTA models with max and avg
    pooling for each seed (default: the profile's ``pooling_seeds`` for MNIST, ``cifar_seeds`` for
    CIFAR-10), and evaluate each under the paper's attacks (``STUDY_ATTACKS``, eps ``STUDY_EPS``) on
    the profile's test subset (``n_pooling`` / ``n_cifar_test`` images, the same for every model; on
    CIFAR-10 the profile's ``cifar_full`` attacks and clean accuracy on every test image), or on
    ``n_test`` images (``"all"``: every attack on every test image)."""

    t0 = time.perf_counter()
    p = get_profile(profile)
    seeds = tuple(seeds if seeds is not None else (p.pooling_seeds if dataset == "mnist" else p.cifar_seeds))
    attacks, eps = STUDY_ATTACKS[dataset], STUDY_EPS[dataset]
    split = load(dataset, "test", data_root)
    test, full, fewer = study_images(p, dataset, split, n_test)
    models, infos, evals, rows = {}, {}, {}, []
    for pooling in POOLINGS:
        for seed in seeds:
            model, info = classifier(profile, pooling=pooling, training="atta", seed=seed, data_root=data_root,
                                     retrain=retrain, exact=exact, dataset=dataset, arch=arch, progress=progress)
            ev = evaluate_study_model(model, info, split, test, full, dataset, keep, progress, fewer)
            models[pooling, seed], infos[pooling, seed], evals[pooling, seed] = model, info, ev
            rows.append((pooling, seed, "clean", ev.clean, ev.n_images.get("clean", len(test))))
            rows += [(pooling, seed, a, ev.robust[a], ev.n_images.get(a, len(test))) for a in attacks]
            if progress:
                print(f"{dataset} {arch or 'smallcnn'} {pooling} seed {seed} ({info['source']}): clean "
                      f"{ev.clean:.2%}, " + ", ".join(f"{a} {ev.robust[a]:.2%}" for a in attacks))
    per_seed = pd.DataFrame(rows, columns=["pooling", "seed", "attack", "accuracy", "n_images"])
    return PoolingStudy(dataset, arch, attacks, eps, test, models, infos, evals, per_seed, time.perf_counter() - t0)


def missing_study_models(profile: str = "default", dataset: str = "mnist", archs: Iterable[str | None] = (None,),
                         seeds: Iterable[int] | None = None, data_root: str | None = None,
                         exact: bool | None = None) -> list[str]:
    """The ATTA models of a pooling study that neither the artifact cache nor ``weights/`` holds (so
    :func:`pooling_study` would train them), as ``"<arch> <pooling> seed <k>"``; empty when all are there."""
    p = get_profile(profile)
    seeds = tuple(seeds if seeds is not None else (p.pooling_seeds if dataset == "mnist" else p.cifar_seeds))
    return [f"{arch or 'smallcnn'} {pooling} seed {seed}" for arch in archs for pooling in POOLINGS for seed in seeds
            if classifier_source(profile, pooling=pooling, training="atta", seed=seed, data_root=data_root,
                                 exact=exact, dataset=dataset, arch=arch) is None]


def study_images(p, dataset: str, split, n_test: int | str | None = None):
    """The test images of a pooling study and what is trimmed: ``(test, full, fewer)``. ``full`` names the attacks
    run on all of ``split`` beside ``test`` (None when every attack runs on ``test``); ``fewer`` maps attacks run on
    a fixed random part of ``test`` to its size (empty when none). ``p`` is the profile (its ``cifar_full`` and
    ``cifar_fewer`` trim CIFAR-10 only, ``cifar_fewer`` only the profile's own subset); ``n_test`` (a count, or
    "all") overrides its ``n_pooling`` / ``n_cifar_test``."""
    chosen = n_test is None
    if n_test is None:
        n_test = p.n_pooling if dataset == "mnist" else p.n_cifar_test
    elif n_test == "all":
        n_test = None
    elif not isinstance(n_test, int) or isinstance(n_test, bool) or n_test < 1:
        raise ValueError(f"n_test must be a positive number of images, 'all' or None (the profile's); got {n_test!r}")
    test = split.subset(n_test)
    attacks = STUDY_ATTACKS[dataset]
    trimmed = dataset == "cifar10" and len(test) < len(split)
    full = tuple(a for a in attacks if a in p.cifar_full) if trimmed and p.cifar_full else None
    fewer = {a: n for a, n in p.cifar_fewer.items() if a in attacks and n < len(test)} if trimmed and chosen else {}
    return test, full, fewer


def evaluate_study_model(model: nn.Module, info: dict, split, test, full: tuple[str, ...] | None, dataset: str,
                         keep: Iterable[str] = (), progress: bool = True, fewer: dict[str, int] | None = None
                         ) -> Evaluation:
    """One model of a pooling study under the study's attacks (``STUDY_ATTACKS``, eps ``STUDY_EPS``) through the
    artifact cache: on ``test``, or trimmed (:func:`_evaluate_trimmed`) when ``full`` names the attacks run on all
    of ``split`` or ``fewer`` those run on a part of ``test`` (all three from :func:`study_images`)."""
    attacks, eps = STUDY_ATTACKS[dataset], STUDY_EPS[dataset]
    if full is None and not fewer:
        return evaluate_cached(model, info, test, attacks, eps, keep=keep, progress=progress)
    return _evaluate_trimmed(model, info, split, test, attacks, full or (), fewer or {}, eps, keep, progress)


def _evaluate_trimmed(model: nn.Module, info: dict, split, test, attacks: tuple[str, ...], full: tuple[str, ...],
                      fewer: dict[str, int], eps: float, keep: Iterable[str], progress: bool) -> Evaluation:
    """Clean accuracy and the attacks in ``full`` on every image of ``split`` (none: clean on ``test``), those in
    ``fewer`` on a fixed random part of ``test`` of the given size (:func:`interpretgan.data.random_positions`, so
    a smaller part lies inside a larger one), the others on ``test`` (a subset of ``split``), as one
    :class:`Evaluation`: per-image ``correct`` follows ``test`` except for the ``fewer`` attacks, whose positions in
    ``test`` are in ``positions``; ``n_images`` says how many images each figure has."""
    keep = list(keep)
    if any(k in fewer for k in keep):
        raise ValueError(f"keep {keep} names an attack run on part of the test images ({sorted(fewer)})")
    parts = {}
    if full:
        parts["full"] = evaluate_cached(model, info, split, list(full), eps, keep=[k for k in keep if k in full],
                                        progress=progress)
    rest = [a for a in attacks if a not in full and a not in fewer]
    ev = evaluate_cached(model, info, test, rest, eps, keep=[k for k in keep if k in rest], progress=progress)
    at = test.indices  # positions in the whole split
    base = parts.get("full", ev)
    clean_correct = base.correct["clean"][at] if full else ev.correct["clean"]
    correct = {**ev.correct, "clean": clean_correct, **{a: parts["full"].correct[a][at] for a in full}}
    kept = {**ev.adversarial, **({a: x[at] for a, x in parts["full"].adversarial.items()} if full else {})}
    n_images = {"clean": len(split) if full else len(test), **{a: len(split) for a in full},
                **{a: len(test) for a in rest}}
    robust = {a: (parts["full"] if a in full else ev).robust[a] for a in attacks if a not in fewer}
    positions = {}
    for a, n in fewer.items():
        pos = random_positions(len(test), n)
        part = evaluate_cached(model, info, test.take(pos), [a], eps, progress=progress)
        correct[a], robust[a], n_images[a], positions[a] = part.correct[a], part.robust[a], len(pos), pos
    return Evaluation(clean=base.clean, robust={a: robust[a] for a in attacks}, correct=correct, adversarial=kept,
                      n_images=n_images, positions=positions)


def table_with_paper(summary: pd.DataFrame, paper: dict, attacks: Iterable[str], groups: Iterable[tuple]
                     ) -> pd.DataFrame:
    """The paper's table layout: one row per group (e.g. ``("max",)`` or ``("wrn", "avg")``), for each
    attack our "mean ± std" over seeds (percent) beside the paper's number."""
    rows = {}
    for group in groups:
        ref = paper[group if len(group) > 1 else group[0]]
        row = {}
        for atk in attacks:
            s = summary.loc[(*group, atk)]
            row[(atk, "ours")] = f"{s['mean']:.2f} ± {s['std']:.2f}"
            row[(atk, "paper")] = f"{ref[atk]:.2f}"
        rows[" / ".join(group)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def apgd_cached(model: nn.Module, info: dict[str, Any], test, eps: float | str, loss: str, steps: int = 100,
                seed: int = 0, progress: bool = True, timed: bool = False) -> torch.Tensor | tuple[torch.Tensor, float | None]:
    """:func:`apgd` through the artifact cache (keyed by the classifier, the images and the settings). With ``timed``,
    ``(correct, seconds)``: the seconds the run took, an interrupted run's earlier processes included (None for an
    entry cached before they were recorded)."""
    settings = {"kind": "apgd", "classifier": info["key"], "loss": loss, "steps": steps, "eps": check_epsilon(eps),
                "test": test.name, "n": len(test), "indices_sum": int(test.indices.sum()), "seed": seed,
                "exact": info["settings"]["exact"]}
    f = cache.entry("evaluations", settings) / "apgd.pt"
    if (done := cache.read_checkpoint(f)) is None:
        partial = f.with_name("apgd.partial.pt")  # an interrupted run goes on from here
        t0, before = time.monotonic(), seconds_done(cache.read_checkpoint(partial))
        correct = apgd(model, test, eps, loss=loss, steps=steps, exact=info["settings"]["exact"], seed=seed,
                       progress=progress, resume=partial)
        done = {"correct": correct, "seconds": before + time.monotonic() - t0}
        cache.save_checkpoint(done, f)
        partial.unlink(missing_ok=True)
    return (done["correct"], done.get("seconds")) if timed else done["correct"]


def masking_positions(n_test: int, n_images: int, seed: int = 0) -> torch.Tensor:
    """Positions (sorted) of the masking checks' images among a study's ``n_test`` test images: a fixed random
    ``n_images`` of them (all when there are no more). Not the first ``n_images``: a split stored in class order
    (the CIFAR-10 JPEG copy's test split is) would give one class only."""
    return random_positions(n_test, n_images, seed)


def masking_checks(study: PoolingStudy, n_images: int = 1_000, seed: int = 0, steps: int = 100,
                   progress: bool = True) -> dict[str, Any]:
    """Gradient-masking checks on the ``seed`` models of a :class:`PoolingStudy` (which must have kept
    its PGD-k adversarial images, ``keep=["pgd40"]`` on MNIST), on a fixed random ``n_images`` of its test set
    (:func:`masking_positions`; all of them when it has no more).

    Returns ``transfer`` (DataFrame, accuracy of each target model, column, on PGD images crafted on
    each source model, row; the diagonal is white-box), ``apgd`` (DataFrame per pooling: white-box
    PGD, APGD-CE, APGD-DLR and the worst case over every attack of the study, per image), and
    ``summary`` (the same numbers rounded to 4 places, for glueing); fractions throughout."""
    pgd = next(a for a in study.attacks if a.startswith("pgd"))
    at = masking_positions(len(study.test), n_images)
    sub = study.test.take(at)
    n = len(sub)
    labels = sub.labels
    adv = {pool: study.evaluations[pool, seed].adversarial[pgd][at] for pool in POOLINGS}
    # per image: is the model scored on dst right on the PGD images crafted on src (dst == src: white-box images)
    right = {(src, dst): transfer(study.models[dst, seed], adv[src], labels,
                                  exact=study.infos[dst, seed]["settings"]["exact"])
             for src in POOLINGS for dst in POOLINGS}
    transfer_rows = {f"crafted on {src}": {f"scored on {dst}": right[src, dst].float().mean().item() for dst in POOLINGS}
                     for src in POOLINGS}
    columns = {"white_box": f"{pgd} (white-box)", "apgd_ce": "APGD-CE", "apgd_dlr": "APGD-DLR",
               "transfer": f"{pgd} crafted on the other model", "worst_case": "worst case (every attack)"}
    apgd_rows, summary = {}, {}
    for pool in POOLINGS:
        model, info, ev = study.models[pool, seed], study.infos[pool, seed], study.evaluations[pool, seed]
        ce = apgd_cached(model, info, sub, study.eps, "ce", steps, seed, progress)
        dlr = apgd_cached(model, info, sub, study.eps, "dlr", steps, seed, progress)
        moved = right["avg" if pool == "max" else "max", pool]
        worst = ce & dlr & moved
        for a in study.attacks:
            worst &= ev.correct_at(a, at)
        per_image = {"white_box": ev.correct_at(pgd, at), "apgd_ce": ce, "apgd_dlr": dlr, "transfer": moved,
                     "worst_case": worst}
        fractions = {k: v.float().mean().item() for k, v in per_image.items()}
        apgd_rows[pool] = {columns[k]: v for k, v in fractions.items()}
        summary[pool] = {k: round(v, 4) for k, v in fractions.items()}
    return {"transfer": pd.DataFrame(transfer_rows).T.round(4), "apgd": pd.DataFrame(apgd_rows).T.round(4),
            "summary": summary, "n_images": n, "attack": pgd}


def describe_masking(checks: dict[str, Any]) -> str:
    """The gradient-masking checks of :func:`masking_checks` in words."""
    s, pgd, lines = checks["summary"], checks["attack"], []
    for pool in POOLINGS:
        r = s[pool]
        strongest = min(r["apgd_ce"], r["apgd_dlr"])
        lines.append(
            f"{pool}: white-box {pgd} {r['white_box']:.2%}; transferred from the other model {r['transfer']:.2%} "
            f"({'weaker than white-box, as expected without masking' if r['transfer'] >= r['white_box'] else 'STRONGER than white-box: a sign of gradient masking'}); "
            f"APGD-CE {r['apgd_ce']:.2%}, APGD-DLR {r['apgd_dlr']:.2%} "
            f"({(r['white_box'] - strongest) * 100:.2f} points below {pgd}); worst case over every attack {r['worst_case']:.2%}.")
    gap = (s["avg"]["worst_case"] - s["max"]["worst_case"]) * 100
    lines.append(f"Worst-case robust accuracy, avg - max: {gap:+.2f} points on {checks['n_images']:,} images "
                 f"({'avg stays ahead' if gap > 0 else 'avg is not ahead'} once every attack is counted).")
    return "\n".join(lines)


def means_by_pooling(summary: pd.DataFrame, attacks: Iterable[str], prefix: tuple = ()) -> dict[str, dict[str, float]]:
    """{pooling: {attack: mean accuracy over seeds}} (fractions, 4 decimals) from :func:`seed_summary`."""
    return {pool: {a: round(float(summary.loc[(*prefix, pool, a), "mean"]) / 100, 4) for a in attacks}
            for pool in POOLINGS}


def values_by_seed(per_seed: pd.DataFrame, attacks: Iterable[str]) -> dict[str, dict[str, list[float]]]:
    """{pooling: {attack: [accuracy of each seed, in seed order]}} (fractions, 4 decimals)."""
    out: dict[str, dict[str, list[float]]] = {}
    for pool in POOLINGS:
        rows = per_seed[per_seed["pooling"] == pool].sort_values("seed")
        out[pool] = {a: [round(float(v), 4) for v in rows[rows["attack"] == a]["accuracy"]] for a in attacks}
    return out
