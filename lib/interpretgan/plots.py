"""Figures: each function draws one figure a reader can read and returns the matplotlib Figure.

Who should use it: notebooks. Nothing here computes results; pass it what the library returned.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from .diagnosis import vulnerable_layers


def learning_curve(history: dict, title: str = "Natural training", robust_label: str = "robust (PGD check)"
                   ) -> plt.Figure:
    """Training loss (every few steps, against epochs) and test accuracy per epoch; for adversarial
    training (a history with ``robust_accuracy``) also the per-epoch robust accuracy and the mean
    l_inf size of the ATTA perturbations trained on."""
    adversarial = "robust_accuracy" in history
    fig, axes = plt.subplots(1, 3 if adversarial else 2, figsize=(14 if adversarial else 10, 3.4))
    a, b = axes[0], axes[1]
    steps_per_epoch = history["step"][-1] / history["epoch"][-1] if history["epoch"] else 1
    a.plot(np.asarray(history["step"]) / steps_per_epoch, history["step_loss"], lw=1)
    a.set(xlabel="epoch", ylabel="TRADES loss (training)" if adversarial else "cross-entropy (training)",
          yscale="log", title="training loss")
    for e in history["epoch"]:
        a.axvline(e, color="0.85", lw=0.5, zorder=0)
    series = [("clean", history["test_accuracy"])]
    if adversarial:
        series.append((robust_label, history["robust_accuracy"]))
    for name, values in series:
        b.plot(history["epoch"], np.asarray(values) * 100, "o-", label=name)
        for e, acc in zip(history["epoch"], values):
            b.annotate(f"{acc * 100:.1f}" if adversarial else f"{acc * 100:.2f}", (e, acc * 100),
                       textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    b.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy after each epoch")
    b.set_xticks(history["epoch"])
    if adversarial:
        b.legend(fontsize=8, loc="lower right")
        c = axes[2]
        c.plot(history["epoch"], history["perturbation"], "o-", color="tab:red")
        c.set(xlabel="epoch", ylabel="mean l_inf of the perturbations", title="ATTA buffer: perturbation size")
        c.set_xticks(history["epoch"])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def adversarial_examples(x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor, pred_clean: torch.Tensor,
                         pred_adv: torch.Tensor, n: int = 10, title: str = "",
                         class_names: Sequence[str] | None = None) -> plt.Figure:
    """Three rows for the first ``n`` images: clean (true label, prediction), perturbation (summed over
    colour channels), adversarial."""
    n = min(n, len(x))
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.4), squeeze=False)
    delta = (x_adv - x)[:n]
    lim = float(delta.abs().max()) or 1.0
    for i in range(n):
        show_image(axes[0, i], x[i])
        axes[0, i].set_title(f"y={_name(int(labels[i]), class_names)} f={_name(int(pred_clean[i]), class_names)}",
                             fontsize=8)
        axes[1, i].imshow(delta[i].mean(0).cpu(), cmap="seismic", vmin=-lim, vmax=lim)
        show_image(axes[2, i], x_adv[i])
        wrong = int(pred_adv[i]) != int(labels[i])
        axes[2, i].set_title(f"f={_name(int(pred_adv[i]), class_names)}", fontsize=8, color="red" if wrong else "black")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(("clean", f"perturbation\n(±{lim:.2f})", "adversarial")):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def misclassification_heatmap(matrix: np.ndarray, title: str = "", classes: Sequence[str] | None = None
                              ) -> plt.Figure:
    """The paper's Figure 7: for each true label (row), where its misclassified adversarial images go (%)."""
    classes = list(classes or range(matrix.shape[0]))
    fig, ax = plt.subplots(figsize=(7, 5.6))
    sns.heatmap(matrix * 100, annot=True, fmt=".1f", cmap="Blues", vmin=0, vmax=100, ax=ax,
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "% of that row's misclassified images"},
                annot_kws={"fontsize": 7})
    ax.set(xlabel="adversarial label", ylabel="true label", title=title)
    fig.tight_layout()
    return fig


def robustness_bars(accuracies: dict[str, float], clean: float | None = None, title: str = "") -> plt.Figure:
    """Bar chart of robust accuracy (%) per attack, with the clean accuracy as a line."""
    fig, ax = plt.subplots(figsize=(1.2 * len(accuracies) + 2, 3.2))
    names = list(accuracies)
    vals = [accuracies[k] * 100 for k in names]
    bars = ax.bar(names, vals, color="tab:red")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if clean is not None:
        ax.axhline(clean * 100, color="k", ls="--", lw=1, label=f"clean {clean * 100:.2f}%")
        ax.legend(loc="upper right", fontsize=8)
    ax.set(ylabel="robust accuracy (%)", ylim=(0, 105), title=title)
    fig.tight_layout()
    return fig


def gan_history(history: dict, title: str = "") -> plt.Figure:
    """InterpretGAN training curves against images shown: the critic's loss, the generator's adversarial
    loss, the interpretability cross-entropy (or the inverter's pixel MSE), and the monitor set's
    explanation accuracy; dotted lines mark where each new scale starts fading in."""
    pixel = not np.isnan(np.asarray(history["pixel"], dtype=float)).all()
    panels = [("pixel", "pixel MSE (inverter)")] if pixel else [
        ("loss_d", "critic loss (WGAN-GP)"), ("loss_g", "generator: -D(x_hat)"), ("loss_i", "interpretability CE")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.6 * (len(panels) + 1), 3.0))
    k = np.asarray(history["images"]) / 1000
    starts = [k[i] for i in range(1, len(k)) if history["scale"][i] != history["scale"][i - 1]]
    for ax, (key, name) in zip(axes, panels):
        ax.plot(k, history[key], lw=1)
        ax.set(xlabel="thousand images shown", title=name)
        if key == "loss_i":
            ax.set_yscale("log")
    acc_ax = axes[-1]
    acc_ax.plot(np.asarray(history["monitor_images"]) / 1000, np.asarray(history["monitor_accuracy"]) * 100, "o-")
    acc_ax.set(xlabel="thousand images shown", ylabel="%", ylim=(0, 102), title="explanations f labels correctly")
    for ax in axes:
        for s in starts:
            ax.axvline(s, color="0.7", lw=0.8, ls=":")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_image(ax, image: torch.Tensor) -> None:
    """Draw one image (C x H x W in [0, 1]; 1 channel in grey, 3 in colour) on ``ax`` without ticks."""
    img = image.detach().float().cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label] if class_names else str(label)


def explanation_grid(images: torch.Tensor, explained: dict, labels: torch.Tensor | None = None,
                     predictions: dict | None = None, title: str = "", row_names: dict | None = None,
                     class_names: Sequence[str] | None = None) -> plt.Figure:
    """Rows: the input images, then one row of explanations per layer (``explained``: layer -> N x C x H x W
    in [0, 1]); ``predictions`` (layer -> N labels) titles each explanation with f's label on it (a name from
    ``class_names`` when given), red when it differs from ``labels``."""
    rows = [("input", images)] + list(explained.items())
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.05 * n + 0.8, 1.1 * len(rows) + 0.4), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            show_image(ax, imgs[c])
            if r == 0 and labels is not None:
                ax.set_title(f"y={_name(int(labels[c]), class_names)}", fontsize=7)
            elif predictions is not None and name in predictions:
                pred = int(predictions[name][c])
                wrong = labels is not None and pred != int(labels[c])
                ax.set_title(f"f={_name(pred, class_names)}", fontsize=7, color="red" if wrong else "black")
        axes[r, 0].set_ylabel((row_names or {}).get(name, name), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def layer_by_layer(rows: list[tuple[str, torch.Tensor, dict, dict | None, int | None]], title: str = "",
                   class_names: Sequence[str] | None = None, size: float = 1.15) -> plt.Figure:
    """The paper's Figure 3 (and 4, 5) layout: one row per (name, image, explanations, labels, true label)
    entry — the image in the first column, then its explanation at every layer, each titled with the
    classifier's label on it (a name from ``class_names`` when given; red when it differs from the true
    label). ``size``: inches per image."""
    layers = list(rows[0][2])
    fig, axes = plt.subplots(len(rows), len(layers) + 1,
                             figsize=(size * (len(layers) + 1) + 1.2, (size + 0.1) * len(rows) + 0.5), squeeze=False)
    for r, (name, img, explained, labels, truth) in enumerate(rows):
        show_image(axes[r, 0], img)
        axes[r, 0].set_ylabel(name, fontsize=8)
        for c, layer in enumerate(layers, start=1):
            ax = axes[r, c]
            show_image(ax, explained[layer])
            if labels is not None:
                lab = int(labels[layer])
                ax.set_title(f"{layer}: {_name(lab, class_names)}", fontsize=7,
                             color="red" if truth is not None and lab != truth else "black")
    axes[0, 0].set_title("input", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def attribution_maps(images: torch.Tensor, maps: dict, labels: list[str] | None = None, title: str = "") -> plt.Figure:
    """One row per image: the image, then each attribution method's map (diverging colours, symmetric
    around zero per map)."""
    names = list(maps)
    n = len(images)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.4 * (len(names) + 1) + 0.6, 1.45 * n + 0.5), squeeze=False)
    for r in range(n):
        show_image(axes[r, 0], images[r])
        axes[r, 0].set_ylabel(labels[r] if labels else "", fontsize=8)
        for c, name in enumerate(names, start=1):
            m = maps[name][r].sum(0).cpu()
            lim = float(m.abs().max()) or 1.0
            axes[r, c].imshow(m, cmap="seismic", vmin=-lim, vmax=lim)
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def layer_shares(tables: dict, title: str = "", ylabel: str = "%") -> plt.Figure:
    """A share per layer with its interval, one line per table (name -> DataFrame with ``share``, ``share_low``,
    ``share_high`` in fractions, layers as the index), e.g. the adversarial-label share of explanations."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, t in tables.items():
        xs = np.arange(len(t))
        err = np.vstack([t["share"] - t["share_low"], t["share_high"] - t["share"]]).astype(float) * 100
        ax.errorbar(xs, t["share"].astype(float) * 100, yerr=err, fmt="o-", capsize=3, label=name)
    first = next(iter(tables.values()))
    ax.set_xticks(np.arange(len(first)))
    ax.set_xticklabels(first.index)
    ax.set(ylabel=ylabel, ylim=(-2, 102), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def vulnerability_bars(tables: dict, paper: dict | None = None, title: str = "") -> plt.Figure:
    """Acc_i and Vul_i per layer (%, with their 95% intervals) for each table (name -> table from
    :func:`interpretgan.diagnosis.vulnerability`), the paper's values (``paper``: name -> {"acc": {layer: %},
    "vul": {layer: %}}) as black ticks; layers whose
    Vul_i interval lies above zero and above the mean are marked vulnerable (hatched)."""

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    names = list(tables)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        t = tables[name]
        xs = np.arange(len(t)) + (k - (len(names) - 1) / 2) * width
        for ax, col in ((a, "acc"), (b, "vul")):
            err = np.vstack([t[col] - t[f"{col}_low"], t[f"{col}_high"] - t[col]]) * 100
            bars = ax.bar(xs, t[col] * 100, width, yerr=err, capsize=2, label=name)
            if col == "vul":
                for bar, layer in zip(bars, t.index):
                    if layer in vulnerable_layers(t):
                        bar.set_hatch("//")
            if paper and name in paper:
                ref = paper[name][col]
                ax.scatter(xs, [ref[l] for l in t.index], marker="_", s=120, color="k", zorder=3,
                           label="paper" if k == 0 else None)
    for ax, lab in ((a, "Acc_i: f on explanations of D* (%)"), (b, "Vul_i (%)")):
        ax.set_xticks(np.arange(len(tables[names[0]])))
        ax.set_xticklabels(tables[names[0]].index)
        ax.set(ylabel=lab)
        ax.axhline(0, color="k", lw=0.6)
        ax.legend(fontsize=8)
    a.set_title("accuracy on each layer's explanations")
    b.set_title("vulnerability per layer (hatched: flagged vulnerable)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def vulnerability_profiles(tables: dict, title: str = "") -> plt.Figure:
    """Vul_i per layer (%, 95% intervals) of models with different layers side by side, one panel each (name ->
    table from :func:`interpretgan.diagnosis.vulnerability`), on one scale; flagged layers hatched."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables) + 1, 3.4), squeeze=False, sharey=True)
    for ax, (name, t) in zip(axes[0], tables.items()):
        err = np.vstack([t["vul"] - t["vul_low"], t["vul_high"] - t["vul"]]) * 100
        bars = ax.bar(np.arange(len(t)), t["vul"] * 100, 0.7, yerr=err, capsize=2)
        for bar, layer in zip(bars, t.index):
            if layer in vulnerable_layers(t):
                bar.set_hatch("//")
        ax.set_xticks(np.arange(len(t)))
        ax.set_xticklabels(t.index, rotation=30 if len(t) > 6 else 0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(name, fontsize=10)
    axes[0, 0].set_ylabel("Vul_i (%)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig

