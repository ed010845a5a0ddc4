"""The layer vulnerability diagnosis (paper Section 5, Table 1) and the max-pool index study.

Who should use it: ``05_diagnose`` and anyone diagnosing their own architecture. Given adversarial
images D* (attacked white-box against the model) and a fitted InterpretGAN explainer per layer:

- ``Acc_i`` is the accuracy, against the true labels, of the classifier f on the explanations of
  layer i for D*;
- ``Vul_i`` (equation 5): ``Vul_1 = 1 - Acc_1`` and ``Vul_i = Acc_{i-1} - Acc_i`` (it can be negative);
  so the ``Vul_i`` sum to ``1 - Acc_last``.

Intervals are 95% bootstrap confidence intervals over images (scipy.stats.bootstrap; for ``Vul_i``
on the per-image difference, so the pairing of layers is kept).

The max-pool index study asks how often the argmax position of a max-pooling window changes between
a natural image and its adversarial version, from the pooling's own indices, also with tied windows
(several equal maxima, e.g. all zero after a ReLU) left out.

Example::

    >>> table = vulnerability(layer_correctness(model, explainers, x_adv, y))
    >>> table.loc["conv2", ["acc", "vul"]]
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import fast
from .attacks import predict


@torch.no_grad()
def layer_correctness(model: nn.Module, explainers: dict, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 250, exact: bool | None = None) -> dict[str, torch.Tensor]:
    """For each layer (in ``explainers``' order): per-image booleans, whether f labels the explanation of
    that layer for ``images`` with the true label (the ingredients of Acc_i)."""
    device = next(model.parameters()).device
    out = {}
    for layer, expl in explainers.items():
        parts = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            parts.append(predict(model, expl(x, exact), exact).cpu() == labels[i:i + batch_size])
        out[layer] = torch.cat(parts)
    return out


def _ci(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if np.all(values == values[0]):  # no spread: the interval is the point
        return float(values[0]), float(values[0])
    res = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def vulnerability(correct: dict[str, torch.Tensor], confidence: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Table 1 from per-image correctness (layer -> bool tensor, in the model's order): one row per
    layer with ``acc`` (Acc_i), ``vul`` (Vul_i, equation 5), and bootstrap intervals ``acc_low``,
    ``acc_high``, ``vul_low``, ``vul_high`` (fractions; 95% by default)."""
    rows, prev = {}, None
    for layer, c in correct.items():
        c = c.double().numpy()
        diff = (np.ones_like(c) if prev is None else prev) - c
        acc_ci, vul_ci = _ci(c, confidence, n_resamples, seed), _ci(diff, confidence, n_resamples, seed)
        rows[layer] = {"acc": c.mean(), "acc_low": acc_ci[0], "acc_high": acc_ci[1],
                       "vul": diff.mean(), "vul_low": vul_ci[0], "vul_high": vul_ci[1]}
        prev = c
    return pd.DataFrame(rows).T


def vulnerable_layers(table: pd.DataFrame) -> list[str]:
    """Layers whose Vul_i interval lies above zero *and* whose Vul_i is above the mean Vul_i: the ones the
    diagnosis blames."""
    mean = table["vul"].mean()
    return [layer for layer, r in table.iterrows() if r["vul_low"] > 0 and r["vul"] > mean]


# ----------------------------------------------------------------------------------------------
# The max-pool index study
# ----------------------------------------------------------------------------------------------

def _pool_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every nn.MaxPool2d module of ``model`` for images ``x`` (name -> tensor), via hooks."""
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MaxPool2d):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _windows(t: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """Every pooling window's values, (N, C, out_h * out_w, k*k)."""
    k, s = pool.kernel_size, pool.stride
    k = k if isinstance(k, int) else k[0]
    s = s if isinstance(s, int) else s[0]
    n, c = t.shape[:2]
    cols = F.unfold(t.reshape(n * c, 1, *t.shape[2:]), kernel_size=k, stride=s)  # (N*C, k*k, L)
    return cols.transpose(1, 2).reshape(n, c, -1, k * k)


@torch.no_grad()
def maxpool_index_change(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 250
                         ) -> pd.DataFrame:
    """For each max-pooling module (in forward order): the fraction of pooling windows (over images,
    channels and positions) whose argmax position differs between ``x`` and ``x_adv``, taken from the
    pooling's own ``return_indices``; and the same fraction over the windows that are *not* tied in
    either input (a tied window has more than one position equal to its maximum, e.g. all zeros after a
    ReLU, where the argmax is an arbitrary choice). Columns: ``changed``, ``changed_untied``,
    ``tied`` (fraction of windows tied in either input), ``windows`` (count)."""
    device = next(iter(model.parameters()), x).device
    was_training = model.training
    model.eval()
    totals: dict[str, np.ndarray] = {}
    try:
        for i in range(0, len(x), batch_size):
            nat = _pool_inputs(model, x[i:i + batch_size].to(device).float())
            adv = _pool_inputs(model, x_adv[i:i + batch_size].to(device).float())
            for name, a in nat.items():
                pool = model.get_submodule(name)
                _, idx_a = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        ceil_mode=pool.ceil_mode, return_indices=True)
                _, idx_b = F.max_pool2d(adv[name], pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        ceil_mode=pool.ceil_mode, return_indices=True)
                changed = (idx_a != idx_b).flatten()
                wa, wb = _windows(a, pool), _windows(adv[name], pool)
                tied = (((wa == wa.amax(-1, keepdim=True)).sum(-1) > 1) |
                        ((wb == wb.amax(-1, keepdim=True)).sum(-1) > 1)).flatten()
                if tied.numel() != changed.numel():  # padding or ceil mode: windows do not line up
                    tied = torch.zeros_like(changed)
                t = totals.setdefault(name, np.zeros(4))
                t += [changed.sum().item(), (changed & ~tied).sum().item(), tied.sum().item(), changed.numel()]
    finally:
        model.train(was_training)
    rows = {name: {"changed": c / n, "changed_untied": cu / max(n - ti, 1), "tied": ti / n, "windows": int(n)}
            for name, (c, cu, ti, n) in totals.items()}
    return pd.DataFrame(rows).T


def sum_check(table: pd.DataFrame) -> float:
    """``sum(Vul_i) - (1 - Acc_last)``: zero up to rounding for any table from :func:`vulnerability`."""
    return float(table["vul"].sum() - (1 - table["acc"].iloc[-1]))


def order_layers(model: nn.Module, layers: Iterable[str], example: torch.Tensor) -> list[str]:
    """``layers`` (names as in ``model.named_modules()``, nested ones with dots) in the order a forward
    pass on ``example`` calls them; a name the model lacks, or one never called, raises ValueError
    naming the model's modules."""
    names = [n for n, _ in model.named_modules() if n]
    layers = list(dict.fromkeys(layers))
    bad = [l for l in layers if l not in names]
    if bad:
        raise ValueError(f"unknown layers {bad}; the model's modules are: {', '.join(names)}")
    calls: list[str] = []
    handles = [model.get_submodule(l).register_forward_hook(lambda m, i, o, l=l: calls.append(l)) for l in layers]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    missing = [l for l in layers if l not in calls]
    if missing:
        raise ValueError(f"layers {missing} are not called in the model's forward pass")
    return sorted(layers, key=calls.index)


# ----------------------------------------------------------------------------------------------
# Diagnose any model
# ----------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402


@dataclass
class Diagnosis:
    """What :func:`diagnose` returns: the Table-1-style ``table`` (see :func:`vulnerability`), the fitted
    ``explainers`` (layer -> :class:`~interpretgan.gan.Explainer`), the attack's ``clean`` and ``robust``
    accuracy on the diagnosed images, and the per-image ``correct`` flags per layer."""

    table: pd.DataFrame
    explainers: dict
    clean: float
    robust: float
    correct: dict


def diagnose(model: nn.Module, layers: Iterable[str], attack, test_set, train_set, settings=None, *,
             folder=None, seed: int = 0, progress: bool = True, exact: bool | None = None) -> Diagnosis:
    """Diagnose any classifier: which of ``layers`` make it vulnerable to ``attack``.

    Arguments:
        model: any ``nn.Module`` mapping images in [0, 1] to logits; ``layers`` are names from
            ``model.named_modules()`` (nested ones with dots, e.g. ``"layer2.1"``), reached by forward
            hooks and put in forward order.
        attack: a callable ``attack(model, x, y) -> x_adv`` (e.g. ``interpretgan.attacks.PGD(0.3)``).
        test_set, train_set: ImageSets; D* is ``test_set`` attacked white-box; generators fit on ``train_set``.
        settings: :class:`~interpretgan.gan.GANSettings` for every layer's InterpretGAN.
        folder: where each layer's generator is cached (``<layer>.safetensors``) and its fit checkpointed
            (resumable); None fits in memory only.

    Returns a :class:`Diagnosis`; ``table`` has Acc_i, Vul_i and their 95% bootstrap intervals.

    Example::

        >>> d = diagnose(net, ["layer1", "layer2", "fc"], PGD(0.3), test.subset(2000), train)
        >>> d.table[["acc", "vul"]]
    """
    from pathlib import Path

    from . import cache, gan
    from .attacks import run_attack

    settings = settings or gan.GANSettings()
    device = next(model.parameters()).device
    model.eval()
    x0 = test_set.take(slice(0, 2)).tensors(device)[0]
    layers = order_layers(model, layers, x0)
    result = run_attack(model, attack, test_set, device=device, keep_images=True, progress=progress, name="D*")
    explainers = {}
    for layer in layers:
        final = Path(folder) / f"{layer}.safetensors" if folder is not None else None
        if final is not None and final.is_file():
            explainers[layer] = gan.build_explainer(model, layer, settings, cache.load_weights(final), device)
            continue
        explainers[layer], _ = gan.fit_layer(model, layer, train_set, settings, seed=seed, device=device,
                                             checkpoint=Path(folder) / f"{layer}.checkpoint.pt" if folder else None,
                                             progress=progress, exact=exact)
        if final is not None:
            cache.save_weights(gan.explainer_state(explainers[layer]), final)
    correct = layer_correctness(model, explainers, result.x_adv, result.labels, exact=exact)
    return Diagnosis(vulnerability(correct), explainers, result.clean_accuracy, result.robust_accuracy, correct)


# ----------------------------------------------------------------------------------------------
# The paper's models: Table 1 through the artifact cache
# ----------------------------------------------------------------------------------------------

#: The paper's Table 1 (MNIST, PGD-40 at eps 0.3): Acc_i in percent, natural and adversarially trained.
PAPER_TABLE1_ACC = {"natural": {"conv1": 52.6, "conv2": 26.3, "conv3": 21.6, "conv4": 9.9, "fc1": 4.3, "fc2": 3.0,
                                "fc3": 3.5},
                    "atta": {"conv1": 95.1, "conv2": 94.0, "conv3": 93.9, "conv4": 92.6, "fc1": 90.1, "fc2": 90.0,
                             "fc3": 89.5}}
#: The paper's max-pool index study: % of argmax positions that change, first and second pooling layer.
PAPER_MAXPOOL_CHANGE = {"conv2": 40.9, "conv4": 18.1}


def paper_vulnerability(training: str) -> dict[str, float]:
    """Vul_i in percent from the paper's Acc_i (equation 5 applied to Table 1's accuracies)."""
    acc, out, prev = PAPER_TABLE1_ACC[training], {}, 100.0
    for layer, a in acc.items():
        out[layer] = round(prev - a, 1)
        prev = a
    return out


def diagnose_zoo_model(profile: str = "default", pooling: str = "max", training: str = "natural",
                       attack: str = "pgd40", epsilon: float = 0.3, n_images: int | None = None, seed: int = 0,
                       data_root: str | None = None, progress: bool = True, exact: bool | None = None) -> Diagnosis:
    """:func:`diagnose` for the paper's MNIST model of these settings, everything through the artifact
    cache (classifier, D* = ``attack`` at ``epsilon`` on ``n_images`` test digits, one explainer per
    layer, fitted or shipped). The Diagnosis also carries ``model``, ``d_star`` (the AttackResult, with the
    adversarial images) and ``test`` (the natural test digits D* was made from)."""
    from . import zoo
    from .data import mnist32
    from .models import LAYERS

    model, info = zoo.classifier(profile, pooling, training, 0, data_root, progress=progress, exact=exact)
    d_star = zoo.adversarial_set(model, info, attack, epsilon, n_images, seed=seed, data_root=data_root,
                                 progress=progress)
    explainers = {layer: zoo.explainer(profile, pooling, training, layer, 0, data_root, progress=progress,
                                       exact=exact, classifier_model=(model, info))[0] for layer in LAYERS}
    correct = layer_correctness(model, explainers, d_star.x_adv, d_star.labels, exact=info["settings"]["exact"])
    d = Diagnosis(vulnerability(correct), explainers, d_star.clean_accuracy, d_star.robust_accuracy, correct)
    d.model, d.d_star, d.test = model, d_star, mnist32("test", data_root).subset(n_images)
    return d
