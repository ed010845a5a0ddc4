"""Views for the notebooks: plain functions that compute and draw one figure, and the ipywidgets that
call them.

Who should use it: ``04_visualize`` and ``05_diagnose``. Every interactive view is backed by a plain
function that the notebook also calls once with default values, so the committed notebook shows a
static figure and runs headless under papermill and nbval (widgets are never compared there).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import plots
from .attacks import PGD, predict
from .diagnosis import layer_correctness
from .gan import explain_layers


def attack_view(dataset: str = "mnist", epsilon: float | None = None) -> dict:
    """How 04's figures attack and draw ``dataset``'s images: the paper's attack (MNIST: PGD-40, step 0.01;
    CelebA: PGD-20, step eps / 4) as :func:`figure3` keywords (``steps``, ``alpha`` or ``alpha_ratio``,
    ``class_names``, ``size``), and under ``widget`` the epsilon slider's range (``eps_max``, ``eps_step``)."""
    from .data import CELEBA_CLASSES

    if dataset == "celeba":
        return {"steps": 20, "alpha_ratio": 0.25, "class_names": CELEBA_CLASSES, "size": 1.35,
                "widget": {"eps_max": 8 / 255, "eps_step": 0.5 / 255}}
    return {"steps": 40, "alpha": 0.01, "class_names": None, "size": 1.15, "widget": {"eps_max": 0.5, "eps_step": 0.02}}


def attack_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, view: dict,
                  seed: int = 0) -> torch.Tensor:
    """:func:`adversarial` with the steps and step size of an :func:`attack_view`."""
    alpha = view["alpha_ratio"] * epsilon if "alpha_ratio" in view else view["alpha"]
    return adversarial(model, x, y, epsilon, steps=view["steps"], alpha=alpha, seed=seed)


def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int = 40,
                alpha: float = 0.01, seed: int = 0) -> torch.Tensor:
    """PGD-``steps`` (step ``alpha``, random start seeded by ``seed``) at l_inf ``epsilon`` against ``model``
    (``x`` itself at epsilon 0)."""
    if epsilon <= 0:
        return x.detach().clone()
    torch.manual_seed(seed)
    return PGD(epsilon, alpha=alpha, steps=steps)(model, x, y)


def figure3(models: dict, test_set, indices, epsilon: float = 0.3, layers=None, seed: int = 0, steps: int = 40,
            alpha: float = 0.01, alpha_ratio: float | None = None, class_names=None, size: float = 1.15):
    """The paper's Figure 3 (and Figure 5 for faces) for the test images at ``indices``: for each model
    (name -> (classifier, {layer: explainer})), the natural image and its PGD-``steps`` adversarial image at
    ``epsilon`` (step ``alpha``, or ``alpha_ratio * epsilon`` when that is given), each with its explanation
    at every layer in ``layers`` (default: all) and the classifier's label for each (named by ``class_names``
    when given). Returns ``(figure, labels)`` with labels[name][index] = {"natural": {layer: label}, ...}."""
    alpha = alpha if alpha_ratio is None else alpha_ratio * epsilon
    part = test_set.take(torch.as_tensor(list(indices)))
    rows, labels = [], {}
    for name, (model, explainers) in models.items():
        chosen = {l: e for l, e in explainers.items() if layers is None or l in layers}
        x, y = part.tensors(next(model.parameters()).device)
        x_adv = adversarial(model, x, y, epsilon, steps=steps, alpha=alpha, seed=seed)
        nat, nat_lab = explain_layers(model, chosen, x)
        adv, adv_lab = explain_layers(model, chosen, x_adv)
        p_nat, p_adv = predict(model, x).cpu(), predict(model, x_adv).cpu()
        labels[name] = {}
        for i, idx in enumerate(part.indices.tolist()):
            truth = int(y[i])
            said = [class_names[int(k)] if class_names else int(k) for k in (p_nat[i], p_adv[i])]
            rows.append((f"{name}\nnatural #{idx}\nf={said[0]}", x[i].cpu(), {l: v[i] for l, v in nat.items()},
                         {l: v[i] for l, v in nat_lab.items()}, truth))
            rows.append((f"{name}\nadversarial\nf={said[1]}", x_adv[i].cpu(), {l: v[i] for l, v in adv.items()},
                         {l: v[i] for l, v in adv_lab.items()}, truth))
            labels[name][idx] = {"natural": {l: int(v[i]) for l, v in nat_lab.items()},
                                 "adversarial": {l: int(v[i]) for l, v in adv_lab.items()}}
    eps_text = f"{epsilon * 255:g}/255" if epsilon < 0.1 else f"{epsilon:g}"
    fig = plots.layer_by_layer(rows, title=f"InterpretGAN explanations, natural vs PGD-{steps} at eps {eps_text} "
                                            "(titles: layer: f's label on the explanation; red: not the true label)",
                               class_names=class_names, size=size)
    return fig, labels


def layer_span(names, span) -> list[str]:
    """The layers of ``names`` (in the model's order) from ``span[0]`` to ``span[1]``, both included, whichever way
    round: what :func:`figure3_widget`'s layer picker (a range over the layers) stands for."""
    names = list(names)
    for name in span:
        if name not in names:
            raise ValueError(f"layer span {tuple(span)!r}: {name!r} is not among the layers {', '.join(names)}")
    lo, hi = sorted(names.index(name) for name in span)
    return names[lo:hi + 1]


def figure3_widget(models: dict, test_set, epsilon: float = 0.3, max_index: int = 99, eps_max: float = 0.5,
                   eps_step: float = 0.02, **figure_kwargs):
    """ipywidgets for :func:`figure3`: the image index, epsilon (``eps_step`` to ``eps_max``) and the layers shown,
    a range from a first to a last layer (all at first); releasing a control recomputes the attack and redraws (not
    every step of a drag). ``figure_kwargs`` go to :func:`figure3` (e.g. the attack's ``steps`` and ``alpha`` and
    ``class_names``). In a headless run the initial state is also drawn as a static figure (see :func:`_static`).

    Every control is a slider, so each works from the keyboard in JupyterLab too: click (or Tab to) a handle, then
    the arrow keys (Shift+arrows as well), Home and End move it. The layer picker was a multiple-selection list
    (``SelectMultiple``, an HTML select), whose arrow keys JupyterLab takes for the notebook (Shift+Down selected the
    next cell); a slider's handle keeps them (noUiSlider handles the key and marks the event handled, which
    JupyterLab's shortcuts respect). Any other set of layers: :func:`figure3`'s ``layers``."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    names = list(next(iter(models.values()))[1])

    def view(index, epsilon, layers):
        fig, _ = figure3(models, test_set, [index], epsilon, layer_span(names, layers), **figure_kwargs)
        plt.show()

    controls = dict(index=w.IntSlider(0, 0, max_index, description="image", continuous_update=False),
                    epsilon=w.FloatSlider(value=epsilon, min=eps_step, max=eps_max, step=eps_step,
                                          description="epsilon", readout_format=".4f", continuous_update=False),
                    layers=w.SelectionRangeSlider(options=names, index=(0, len(names) - 1), description="layers",
                                                  continuous_update=False, layout=w.Layout(width="420px")))
    return _static(view, controls, w.interactive(view, **controls))


def _static(view, controls: dict, widget):
    """In a headless run (``make reproduce``; :func:`interpretgan.progress.headless`), draw ``view`` once at the
    controls' initial values as a plain figure, so the saved notebook shows a picture of the widget's first
    state to readers without a kernel; returns ``widget`` (shown live in JupyterLab)."""
    from .progress import headless

    if headless():
        print("(a static picture of the controls' initial state; run the notebook for the live controls)")
        view(**{name: c.value for name, c in controls.items()})
    return widget


def accuracy_vs_epsilon(model: nn.Module, explainers: dict, test_set, epsilons, seed: int = 0,
                        batch_size: int = 250, alpha_ratio: float | None = None) -> pd.DataFrame:
    """Acc_i (fraction of ``test_set`` whose layer-i explanation of the PGD-40 image f labels correctly)
    for each epsilon in ``epsilons``: rows epsilon, columns "input" (plain robust accuracy) and layers. The PGD
    step is MNIST's 0.01, or ``alpha_ratio`` times each epsilon when given (e.g. 0.1 for CIFAR-10's 8/255)."""

    device = next(model.parameters()).device
    x, y = test_set.tensors()
    rows = {}
    for eps in epsilons:
        step = {} if alpha_ratio is None else {"alpha": alpha_ratio * eps}
        x_adv = torch.cat([adversarial(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps,
                                       seed=seed, **step).cpu() for i in range(0, len(x), batch_size)])
        correct = layer_correctness(model, explainers, x_adv, y)
        robust = torch.cat([predict(model, x_adv[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
        rows[float(eps)] = {"input": (robust == y).float().mean().item(),
                            **{l: c.float().mean().item() for l, c in correct.items()}}
    return pd.DataFrame(rows).T.rename_axis("epsilon")


def epsilon_figure(curves: dict, title: str = ""):
    """Acc_i against epsilon, one panel per model (name -> table from :func:`accuracy_vs_epsilon`)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, table) in zip(axes[0], curves.items()):
        colors = plt.cm.viridis(np.linspace(0, 1, len(table.columns)))
        for col, c in zip(table.columns, colors):
            ax.plot(table.index, table[col] * 100, "o-", color="k" if col == "input" else c, lw=1.2, ms=3,
                    label="f(x_adv)" if col == "input" else col)
        ax.set(xlabel="epsilon (l_inf)", ylabel="Acc_i (%)", ylim=(-2, 102), title=name)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def epsilon_widget(models: dict, test_set, epsilon: float = 0.3, eps_max: float = 0.5, eps_step: float = 0.05,
                   precomputed: dict | None = None, progress: bool = True):
    """An epsilon slider: Acc_i per layer (bars) at the chosen epsilon, for each model (name -> (classifier,
    {layer: explainer})), on ``test_set``. Every epsilon of the slider's grid (0 to ``eps_max`` by ``eps_step``)
    is computed when the widget is made (tables of :func:`accuracy_vs_epsilon` in ``precomputed``, name ->
    table, are reused), so a step only redraws; it recomputes on release, not on every step of a drag. The
    widget's ``precompute_seconds`` says what making it cost; :func:`interpretgan.bench.widget_step` times a step."""
    import time

    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .progress import tqdm

    seen: dict[tuple[str, float], pd.Series] = {}
    for name, table in (precomputed or {}).items():
        for eps, row in table.iterrows():
            seen[(name, round(float(eps), 6))] = row

    def acc(name: str, eps: float) -> pd.Series:
        key = (name, round(float(eps), 6))
        if key not in seen:
            model, explainers = models[name]
            seen[key] = accuracy_vs_epsilon(model, explainers, test_set, [eps]).iloc[0]
        return seen[key]

    grid = [round(float(e), 6) for e in np.arange(0.0, eps_max + eps_step / 2, eps_step)]
    t0 = time.perf_counter()
    todo = [(name, eps) for eps in grid for name in models if (name, eps) not in seen]
    for name, eps in tqdm(todo, desc="epsilon grid", disable=not progress or not todo):
        acc(name, eps)
    precompute_seconds = time.perf_counter() - t0

    def view(epsilon):
        fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.0), squeeze=False)
        for ax, name in zip(axes[0], models):
            t = acc(name, epsilon)
            ax.bar(t.index, t.values * 100, color=["k"] + ["tab:blue"] * (len(t) - 1))
            ax.set(ylim=(0, 102), ylabel="%", title=f"{name}: Acc_i at eps {epsilon:.2f} ({len(test_set)} images)")
            ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        plt.show()

    controls = dict(epsilon=w.FloatSlider(value=epsilon, min=0.0, max=eps_max, step=eps_step, description="epsilon",
                                          continuous_update=False))
    widget = _static(view, controls, w.interactive(view, **controls))
    widget.precompute_seconds = precompute_seconds
    return widget
