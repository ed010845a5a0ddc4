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

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import cache, fast
from .attacks import DEFAULT_STEP, FGSM, MPGD, PGD, _batch_size, predict
from .params import parse_epsilon

_NAME = re.compile(r"^(fgsm|(m?pgd)(\d+))$")


@dataclass
class Evaluation:
    """One model under several attacks: ``clean`` and ``robust[attack]`` accuracies, per-image
    correctness ``correct[name]`` (bool, "clean" included), and the adversarial images of the
    attacks named in ``keep`` (float in [0, 1], CPU)."""

    clean: float
    robust: dict[str, float]
    correct: dict[str, torch.Tensor]
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict)


def _plan(attacks: Iterable[str]) -> dict[str, list[int]]:
    """Group attack names into runs: {"fgsm": [], "pgd": [ks], "mpgd": [ks]}."""
    plan: dict[str, list[int]] = {}
    for name in attacks:
        m = _NAME.match(str(name).strip().lower())
        if not m:
            raise ValueError(f"attack must be fgsm, pgd<k> or mpgd<k> (k a positive integer), got {name!r}")
        kind = "fgsm" if m.group(1) == "fgsm" else m.group(2)
        plan.setdefault(kind, [])
        if kind != "fgsm":
            plan[kind].append(int(m.group(3)))
    return plan


def evaluate(model: nn.Module, test, attacks: Iterable[str], eps: float | str, dataset: str = "mnist",
             alpha: float | None = None, keep: Iterable[str] = (), exact: bool | None = None, seed: int = 0,
             device: str | torch.device | None = None, batch_size: int | None = None,
             progress: bool = True) -> Evaluation:
    """Clean and robust accuracy of ``model`` (eval mode) on the ImageSet ``test`` under ``attacks``
    (names such as ``["pgd40", "pgd100", "mpgd40", "fgsm"]``) at l_inf radius ``eps``; PGD step
    ``alpha`` defaults to the authors' value for ``dataset``. Returns an :class:`Evaluation`."""
    attacks = [str(a).strip().lower() for a in attacks]
    eps, plan = parse_epsilon(eps), _plan(attacks)
    alpha = DEFAULT_STEP[dataset] if alpha is None else alpha
    device = torch.device(device or next(model.parameters()).device)
    batch_size = _batch_size(batch_size, device, test)
    runners = {kind: (FGSM(eps, exact=exact) if kind == "fgsm" else
                      (PGD if kind == "pgd" else MPGD)(eps, alpha=alpha, steps=max(ks), exact=exact))
               for kind, ks in plan.items()}
    keep = set(keep)
    correct: dict[str, list] = {name: [] for name in ["clean", *attacks]}
    kept: dict[str, list] = {name: [] for name in keep}
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    try:
        for x, y, _ in tqdm(test.batches(batch_size, device=device), total=test.n_batches(batch_size),
                            desc=f"{len(attacks)} attacks", disable=not progress):
            correct["clean"].append((predict(model, x, exact) == y).cpu())
            for kind, atk in runners.items():
                outs = ({"fgsm": atk(model, x, y)} if kind == "fgsm" else
                        {f"{kind}{k}": v for k, v in atk.iterates(model, x, y, plan[kind]).items()})
                for name, x_adv in outs.items():
                    correct[name].append((predict(model, x_adv, exact) == y).cpu())
                    if name in keep:
                        kept[name].append(x_adv.cpu())
    finally:
        model.train(was_training)
    per_image = {k: torch.cat(v) for k, v in correct.items()}
    return Evaluation(clean=per_image["clean"].sum().item() / len(test),
                      robust={a: per_image[a].sum().item() / len(test) for a in attacks},
                      correct=per_image, adversarial={k: torch.cat(v) for k, v in kept.items()})


def evaluate_cached(model: nn.Module, info: dict[str, Any], test, attacks: Iterable[str], eps: float | str,
                    keep: Iterable[str] = (), seed: int = 0, progress: bool = True, **kwargs) -> Evaluation:
    """:func:`evaluate` through the artifact cache: keyed by the classifier (``info`` from
    :func:`interpretgan.zoo.classifier`), the test images, the attacks and every setting."""
    attacks, keep = [str(a).lower() for a in attacks], sorted(keep)
    dataset = info["settings"].get("dataset", "mnist32").replace("mnist32", "mnist")
    exact = info["settings"]["exact"]
    settings = {"kind": "evaluation", "classifier": info["key"], "attacks": attacks, "eps": parse_epsilon(eps),
                "alpha": kwargs.get("alpha"), "dataset": dataset, "test": test.name, "n": len(test),
                "indices_sum": int(test.indices.sum()), "keep": keep, "seed": seed, "exact": exact}
    f = cache.entry("evaluations", settings) / "evaluation.pt"
    if f.is_file():
        return Evaluation(**cache.load_checkpoint(f))
    ev = evaluate(model, test, attacks, eps, dataset=dataset, keep=keep, exact=exact, seed=seed, progress=progress,
                  **kwargs)
    cache.save_checkpoint({"clean": ev.clean, "robust": ev.robust, "correct": ev.correct,
                           "adversarial": ev.adversarial}, f)
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
         seed: int = 0, batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Per-image correctness (bool, N) of ``model`` under torchattacks' APGD (Croce & Hein 2020) with
    the ``loss`` "ce" or "dlr", ``steps`` iterations, one restart, l_inf ``eps``."""
    import torchattacks

    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be one of ['ce', 'dlr'], got {loss!r}")
    device = next(model.parameters()).device
    wrapped = FastForward(model, exact).eval()
    atk = torchattacks.APGD(wrapped, norm="Linf", eps=parse_epsilon(eps), steps=steps, n_restarts=1, seed=seed,
                            loss=loss)
    batch_size = _batch_size(batch_size, device, test)
    out = []
    for x, y, _ in tqdm(test.batches(batch_size, device=device), total=test.n_batches(batch_size),
                        desc=f"APGD-{loss.upper()}", disable=not progress):
        x_adv = atk(x, y)
        out.append((predict(model, x_adv, exact) == y).cpu())
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
        if gap > 0:
            verdict = "avg > max, beyond the seed spread" if gap > spread else "avg > max, within the seed spread"
        else:
            verdict = "avg <= max here" + (" (beyond the seed spread)" if -gap > spread else " (within the seed spread)")
        rows.append({"attack": atk, "max": mx["mean"], "avg": av["mean"], "avg - max": gap,
                     "seed std (larger)": spread, "verdict": verdict})
    return pd.DataFrame(rows).set_index("attack")
