"""How good are explanations: read by whom, how realistic, how faithful to their own input.

Who should use it: ``03_fit_interpretgan`` (and anyone comparing explanation generators). An
explanation is good when readers other than the classifier f recognise it, not only when f agrees
with it. Given f, a *panel* of independent judges (``zoo.judges()``: classifiers of other
architectures, one adversarially trained, never seen by a generator) and explainers per layer:

- :func:`read` runs every reader (f and the judges) on every layer's explanations once;
- :func:`evaluate` gives, per layer, the share of explanations each reader labels with the true label,
  the panel's mean and minimum, the Fréchet distance to real digits in each judge's feature space, and
  two measures of *instance fidelity*: :func:`class_mean_share` (how much of the explanations' pixel
  variance the class means explain: 1 for per-class templates, about 0.23 for real MNIST digits) and
  :func:`same_label_distance` (how far apart, in L2, the explanations of two different digits of one
  label lie; about 9 for real digits);
- :func:`reference` gives the same measures for real digits (the floors);
- :func:`frechet_distance` is the FID formula with a numerically stable matrix square root.

Fractions everywhere (0..1); percent is formatting.

Example::

    >>> panel = {name: m for name, (m, _) in zoo.judges("default").items()}
    >>> table = evaluate(model, panel, explainers, test.subset(2000, seed=3))
    >>> table[["f", "panel mean", "panel min", "class-mean share"]]
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import fast
from .attacks import predict

BATCH = 250


def mean_interval(values: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval (scipy.stats.bootstrap) of the mean of ``values`` (one per image, e.g.
    0 / 1 hits), at ``confidence``; the point itself where all values are equal."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if np.all(values == values[0]):  # no spread: the interval is the point
        return float(values[0]), float(values[0])
    res = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x d each):
    ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a^1/2 S_b S_a^1/2)^1/2).

    The last trace equals FID's Tr((S_a S_b)^1/2) but is computed from symmetric eigendecompositions
    (negative round-off eigenvalues clipped to zero), so singular covariances (dead ReLU features, fewer
    samples than dimensions) give a finite answer without scipy's ``sqrtm`` warnings. Float64 throughout."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ s_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


@torch.no_grad()
def features(judge: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """A judge's penultimate features (``judge.features``) of images in [0, 1], as float64 (N x d)."""
    device = next(judge.parameters()).device
    out = [judge.features(images[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


@torch.no_grad()
def explain(explainers: dict, images: torch.Tensor, exact: bool | None = None,
            batch_size: int = BATCH) -> dict[str, torch.Tensor]:
    """Every layer's explanations of ``images`` (layer -> N x C x H x W in [0, 1], CPU)."""
    out = {}
    for layer, expl in explainers.items():
        device = next(expl.parameters()).device
        out[layer] = torch.cat([expl(images[i:i + batch_size].to(device), exact).cpu()
                                for i in range(0, len(images), batch_size)])
    return out


@torch.no_grad()
def labels_of(reader: nn.Module, images: torch.Tensor, exact: bool | None = None,
              batch_size: int = 500) -> torch.Tensor:
    """The labels ``reader`` (any classifier of images in [0, 1]) gives ``images`` (CPU)."""
    device = next(reader.parameters()).device
    return torch.cat([predict(reader, images[i:i + batch_size].to(device), exact).cpu()
                      for i in range(0, len(images), batch_size)])


def read(readers: dict[str, nn.Module], explained: dict[str, torch.Tensor],
         exact: bool | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Each reader's labels for each layer's explanations: ``{reader: {layer: labels}}``."""
    return {name: {layer: labels_of(r, x_hat, exact) for layer, x_hat in explained.items()}
            for name, r in readers.items()}


def class_mean_share(images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of the images' pixel variance that their class means explain (between-class sum of
    squares over total sum of squares, pooled over pixels): 1 when every image equals its class's mean
    (per-class templates), 0 when the class means coincide."""
    x = images.flatten(1).double()
    total = ((x - x.mean(0)) ** 2).sum()
    between = sum(((x[labels == c].mean(0) - x.mean(0)) ** 2).sum() * int((labels == c).sum())
                  for c in labels.unique())
    return float(between / total)


def same_label_distance(images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """Mean L2 distance (pixels in [0, 1]) between the images of random disjoint pairs of different
    images that share a label (each label's images shuffled with ``seed`` and paired in turn)."""
    g = torch.Generator().manual_seed(seed)
    x, dists = images.flatten(1).double(), []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        half = len(idx) // 2
        dists.append((x[idx[:half]] - x[idx[half:2 * half]]).norm(dim=1))
    return float(torch.cat(dists).mean())


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances between the rows of ``a`` (N x d) and ``b`` (M x d), float64, clipped at 0."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min_(0)


def retrieval(explanations: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """How often an explanation's own input is its nearest input of the same label (pixel L2): the share of
    ``i`` for which ``inputs[i]`` is the closest to ``explanations[i]`` among the inputs labelled ``labels[i]``.
    1 for a perfect copy; about 1 / (images per label) by chance (0.005 for 2,000 digits), and for per-class
    templates at most that. Ties count as misses. Explanations and inputs: N x ... in [0, 1], same shape."""
    x_hat, x = explanations.flatten(1).double(), inputs.flatten(1).double()
    hits = 0
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        d = _pairwise(x_hat[idx], x[idx])
        own = d.diagonal().clone()
        d.fill_diagonal_(float("inf"))
        hits += int((own < d.min(1).values).sum())
    return hits / len(labels)


def distinct_count(images: torch.Tensor, threshold: float = 2.0) -> int:
    """The number of distinct images: the representatives that leader clustering keeps, in order, when an
    image counts as new only if it lies farther than ``threshold`` (pixel L2, images in [0, 1]) from every
    representative kept so far. ``len(images)`` for images pairwise farther apart than ``threshold``; 1 for
    a constant template. The default 2.0 is under a quarter of the distance between two real digits of one
    label (9.1 at 32x32) and a seventeenth of two real test faces' (median 33.7 at 3x64x64): pictures that
    near look alike."""
    x = images.flatten(1).double()
    near = _pairwise(x, x) <= threshold ** 2  # N x N; fine for the few thousand images scored here
    reps = torch.zeros(len(x), dtype=torch.bool)
    for i in range(len(x)):
        if not bool((near[i] & reps).any()):
            reps[i] = True
    return int(reps.sum())


def following(explanations: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
              threshold: float = 2.0) -> dict[str, float]:
    """How well explanations follow their input: :func:`retrieval`, :func:`distinct_count` (``distinct``),
    :func:`same_label_distance` and :func:`class_mean_share` of the explanations, as one dict."""
    return {"retrieval": retrieval(explanations, inputs, labels),
            "distinct": distinct_count(explanations, threshold),
            "same-label distance": same_label_distance(explanations, labels),
            "class-mean share": class_mean_share(explanations, labels)}


def following_by_class(explanations: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
                       names: dict[int, str] | None = None, threshold: float = 2.0) -> dict[str, float]:
    """:func:`following` within each class (``<measure> <class name>``; the class-mean share is left out: one
    class has one mean). For faces, where one class can be drawn as copies and the other as a template."""
    out = {}
    for c in labels.unique().tolist():
        keep = labels == c
        name = (names or {}).get(c, str(c))
        row = following(explanations[keep], inputs[keep], labels[keep], threshold)
        out.update({f"{k} {name}": v for k, v in row.items() if k != "class-mean share"})
    return out


def following_table(explainers: dict[str, dict], test_set, exact: bool | None = None,
                    threshold: float = 2.0) -> pd.DataFrame:
    """:func:`following` for every layer of every model (``explainers``: model name -> layer -> explainer) on the
    images of ``test_set``, one row per (model, layer), and a last row ("real images", "-") for the images as their
    own explanations: the reference each measure is read against."""
    real, labels = test_set.tensors()
    rows = {(name, layer): following(x_hat, real, labels, threshold)
            for name, layers in explainers.items() for layer, x_hat in explain(layers, real, exact).items()}
    rows[("real images", "-")] = following(real, real, labels, threshold)
    return pd.DataFrame(rows).T.rename_axis(["model", "layer"])


def evaluate(classifier: nn.Module, panel: dict[str, nn.Module], explainers: dict, test_set,
             exact: bool | None = None) -> pd.DataFrame:
    """One row per layer, for the explanations of ``test_set``'s images (fractions): ``f`` and each judge
    (share labelled with the true label), ``panel mean``, ``panel min``, ``Fréchet <judge>`` (distance to
    the real images in that judge's feature space; these three only with a ``panel``) and how the explanations follow their inputs
    (:func:`following`: ``retrieval``, ``distinct``, ``same-label distance``, ``class-mean share``)."""
    real, labels = test_set.tensors()
    explained = explain(explainers, real, exact)
    reads = read({"f": classifier, **panel}, explained, exact)
    real_features = {name: features(j, real) for name, j in panel.items()}
    rows = {}
    for layer, x_hat in explained.items():
        row = {name: float((reads[name][layer] == labels).double().mean()) for name in reads}
        judged = [row[name] for name in panel]
        if judged:  # no panel (CIFAR-10 has none): f and the following measures only
            row.update({"panel mean": float(np.mean(judged)), "panel min": float(np.min(judged))})
        row.update({f"Fréchet {name}": frechet_distance(features(j, x_hat), real_features[name])
                    for name, j in panel.items()})
        row.update(following(x_hat, real, labels))
        rows[layer] = row
    return pd.DataFrame(rows).T


def agreement(classifier: nn.Module, panel: dict[str, nn.Module], explainers: dict, test_set,
              exact: bool | None = None, class_names: dict[int, str] | None = None) -> pd.DataFrame:
    """CelebA's measure of explanations (fractions), one row per layer: ``f agrees`` (the share of explanations
    f labels as it labels the face itself: f(x_hat) = f(x)), ``f agrees (balanced)`` (the same averaged over
    f's two labels, so a generator that draws one class only scores 0.5), for each judge ``<judge> agrees``
    (the judge's label on the explanation equals f's on the face), ``<judge> on faces`` (the judge's label on
    the face equals f's: the ceiling of the previous column), ``Fréchet <judge>`` (distance between the
    explanations and the real faces in the judge's feature space), and how the explanations follow their faces:
    ``distinct`` over all faces, and per true class (``class_names``, e.g. ``{0: "female", 1: "male"}``)
    ``retrieval <class>``, ``distinct <class>`` and ``same-label distance <class>`` (:func:`following_by_class`);
    and per class c of f's label on the face, ``<reader> agrees on <c>`` for f and each judge (the share of the
    faces f labels c whose explanation the reader labels c)."""
    from .attacks import balanced_accuracy_of

    real, labels = test_set.tensors()
    target = labels_of(classifier, real, exact)
    explained = explain(explainers, real, exact)
    reads = read({"f": classifier, **panel}, explained, exact)
    real_features = {name: features(j, real) for name, j in panel.items()}
    on_faces = {name: float((labels_of(j, real, exact) == target).double().mean()) for name, j in panel.items()}
    rows = {}
    for layer, x_hat in explained.items():
        row = {"f agrees": float((reads["f"][layer] == target).double().mean()),
               "f agrees (balanced)": balanced_accuracy_of(target, reads["f"][layer])}
        for name, j in panel.items():
            row[f"{name} agrees"] = float((reads[name][layer] == target).double().mean())
            row[f"{name} on faces"] = on_faces[name]
            row[f"Fréchet {name}"] = frechet_distance(features(j, x_hat), real_features[name])
        for name in reads:  # per class of f's label on the face (NaN where f gives none): how often each reader agrees
            for c in (class_names or dict.fromkeys(target.unique().tolist())):
                keep = target == c
                row[f"{name} agrees on {(class_names or {}).get(c, c)}"] = float((reads[name][layer][keep] == c).double().mean())
        row["distinct"] = distinct_count(x_hat)
        row.update(following_by_class(x_hat, real, labels, class_names))
        rows[layer] = row
    return pd.DataFrame(rows).T


def attribute_kept(readers: dict[str, nn.Module], explainers: dict, faces, exact: bool | None = None,
                   confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Figure 4, measured: does a layer's explanation keep an attribute of its face? ``readers`` maps a CelebA
    attribute (e.g. "Eyeglasses") to its reader (label 1: has it, :func:`~interpretgan.zoo.attribute_reader`);
    ``faces`` is an ImageSet with CelebA's annotations. One row per layer, then ``faces`` (the reader on the
    faces themselves: the ceiling); per attribute, over the faces annotated with it, the share read as having it
    (``<attribute>``) with its bootstrap interval (``<attribute> low`` / ``high``), and over the faces annotated
    without it, the share read as having it (``<attribute> false``: what a reader that sees the attribute
    everywhere would score). ``attrs["wearers"]``: how many faces have each attribute."""
    images, _ = faces.tensors()
    explained = explain(explainers, images, exact)
    rows: dict[str, dict] = {layer: {} for layer in [*explained, "faces"]}
    for attribute, reader in readers.items():
        has = faces.attribute(attribute)
        for layer in rows:
            said = labels_of(reader, images if layer == "faces" else explained[layer], exact) == 1
            hit = said[has].double().numpy()
            low, high = mean_interval(hit, confidence, seed=seed) if len(hit) else (np.nan, np.nan)
            rows[layer].update({attribute: float(hit.mean()) if len(hit) else np.nan, f"{attribute} low": low,
                                f"{attribute} high": high, f"{attribute} false": float(said[~has].double().mean())})
    out = pd.DataFrame(rows).T
    out.attrs["wearers"] = {a: int(faces.attribute(a).sum()) for a in readers}
    return out


@torch.no_grad()
def most_visible(reader: nn.Module, faces, attribute: str, k: int = 1, exact: bool | None = None) -> torch.Tensor:
    """Positions in ``faces`` of the ``k`` faces annotated with ``attribute`` whose attribute ``reader`` is surest
    of (highest probability of label 1 on the face): Figure 4's faces, where the attribute is plainly visible."""
    has = torch.nonzero(faces.attribute(attribute)).flatten()
    if len(has) == 0:
        return has
    device = next(reader.parameters()).device
    p = []
    for x, _, _ in faces.take(has).batches(BATCH, device=device):
        with fast.autocast(device, exact):
            p.append(torch.softmax(reader(fast.to_memory_format(x, exact)).float(), dim=1)[:, 1].cpu())
    return has[torch.cat(p).argsort(descending=True)[:k]]


def reference(panel: dict[str, nn.Module], test_set, exact: bool | None = None) -> pd.Series:
    """The same measures for real digits: each judge's accuracy, the Fréchet distance between two disjoint
    random halves (the floor a perfect generator reaches with this many images), and :func:`following` of the
    real images as their own explanations (retrieval 1 unless two inputs of a label coincide)."""
    real, labels = test_set.tensors()
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half = len(real) // 2
    row = {name: float((labels_of(j, real, exact) == labels).double().mean()) for name, j in panel.items()}
    row.update({f"Fréchet {name}": frechet_distance(features(j, real[perm[:half]]), features(j, real[perm[half:2 * half]]))
                for name, j in panel.items()})
    row.update(following(real, real, labels))
    return pd.Series(row, name="real digits")


def judge_table(panel: dict[str, tuple[nn.Module, dict]]) -> pd.DataFrame:
    """The panel as ``zoo.judges()`` returns it, one row per judge: architecture, training, test accuracy (and
    PGD-40 robust accuracy for the adversarially trained one), where its weights came from (fractions)."""
    rows = {}
    for name, (model, info) in panel.items():
        s = info["settings"]
        rows[name] = {"architecture": type(model).__name__, "training": s["training"], "seed": s["seed"],
                      "test accuracy": info["test_accuracy"], "robust accuracy": info.get("robust_accuracy"),
                      "source": info["source"]}
    return pd.DataFrame(rows).T


#: Targets for clean explanations: the panel's mean accuracy at least this, and no judge below JUDGE_FLOOR.
PANEL_TARGET, JUDGE_FLOOR = 0.90, 0.80


def target_report(table: pd.DataFrame, judges: list[str]) -> str:
    """Which layers of an :func:`evaluate` table meet the targets (panel mean >= 90%, every judge >= 80%), and
    where each layer that misses falls short."""
    misses = []
    for layer, r in table.iterrows():
        low = [f"{j} {100 * r[j]:.1f}%" for j in judges if r[j] < JUDGE_FLOOR]
        if r["panel mean"] < PANEL_TARGET or low:
            misses.append(f"{layer} (panel mean {100 * r['panel mean']:.1f}%" + (f"; below 80%: {', '.join(low)}" if low else "") + ")")
    if not misses:
        return f"every layer meets the targets: panel mean >= {PANEL_TARGET:.0%} and no judge below {JUDGE_FLOOR:.0%}"
    return f"{len(table) - len(misses)} of {len(table)} layers meet the targets; missed: " + "; ".join(misses)
