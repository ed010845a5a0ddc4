"""l_inf attacks: FGSM, PGD-k with random start, and momentum PGD (M-PGD) as the paper's authors define it.

Who should use it: anything that needs adversarial examples. Every attack is one small class with
its settings on construction and one call shape, ``attack(model, x, y) -> x_adv``, batched and on
whatever device ``x`` lives on. Attacks never change the model's train/eval mode: evaluate in
``model.eval()`` (``run_attack`` does).

Example::

    >>> atk = PGD(eps=0.3, alpha=0.01, steps=40)
    >>> x_adv = atk(model, x, y)            # same shape as x, |x_adv - x| <= eps, in [0, 1]
    >>> atk = make_attack("mpgd40", eps=8 / 255)

Arguments common to all: ``eps`` (l_inf radius, in pixel units of images scaled to [0, 1]).
Shape: x (N, C, H, W) in [0, 1], y (N,) int64; returns x_adv (N, C, H, W) in [0, 1].
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from .progress import tqdm

from . import fast
from .models import eval_mode

#: Default PGD step size per dataset (the authors' ATTA evaluation code: 0.01 on MNIST).
DEFAULT_STEP = {"mnist": 0.01, "cifar10": 0.003, "celeba": 0.5 / 255}  # CelebA: eps 2/255 over 4
ATTACK_FORMS = ("fgsm", "pgd<k>", "mpgd<k>")
#: The most steps an attack name may ask for (``pgd1000``): the paper uses up to 100 (PGD-100), and 1,000 steps
#: of PGD on the 2,000 digits of the default profile already take about 7 minutes on 2 CPU cores; a mistyped
#: ``pgd999999999`` would otherwise train, then attack for days.
MAX_STEPS = 1000
#: The steps an attack name may ask for, as the error messages say it.
STEPS_RULE = f"k a whole number in 1..{MAX_STEPS}"
#: The one grammar of attack names: fgsm, pgd<k>, mpgd<k> with k a positive integer (at most MAX_STEPS: see
#: :func:`parse_attack_name`).
ATTACK_NAME = re.compile(r"^(fgsm|pgd([1-9]\d*)|mpgd([1-9]\d*))$")


def parse_attack_name(name: str) -> tuple[str, int]:
    """``("fgsm", 1)``, ``("pgd", k)`` or ``("mpgd", k)`` from an attack's short name, k in 1..:data:`MAX_STEPS`;
    ValueError otherwise (naming the forms and the bound)."""
    m = ATTACK_NAME.match(str(name).strip().lower())
    if not m:
        raise ValueError(f"attack must be one of {list(ATTACK_FORMS)} ({STEPS_RULE}), got {name!r}")
    if m.group(1) == "fgsm":
        return "fgsm", 1
    kind, steps = ("pgd", int(m.group(2))) if m.group(2) else ("mpgd", int(m.group(3)))
    if steps > MAX_STEPS:
        raise ValueError(f"attack {name!r} asks for {steps:,} steps; at most {MAX_STEPS:,} ({STEPS_RULE}; "
                         f"the paper uses up to 100)")
    return kind, steps


def check_epsilon(eps: float) -> float:
    """``eps`` as a float when it is a number in (0, 1] (an l_inf radius for images in [0, 1]), else ValueError.
    Attacks take numbers only; :func:`interpretgan.params.parse_epsilon` turns strings such as "8/255" into one."""
    if isinstance(eps, (str, bytes, bool)) or not isinstance(eps, (int, float)) and not hasattr(eps, "__float__"):
        raise ValueError(f"eps must be a number in (0, 1], got {eps!r} (parse strings with interpretgan.params.parse_epsilon)")
    value = float(eps)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"eps must lie in (0, 1] (images are in [0, 1]), got {eps!r}")
    return value


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
    """Gradient (fp32, same shape as ``x``) of the summed cross-entropy with respect to the input,
    the forward pass in the fast path's precision unless ``exact``; model weights untouched."""
    x = fast.to_memory_format(x.detach(), exact).requires_grad_(True)
    with torch.enable_grad():
        with fast.autocast(x.device, exact):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x])
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip ``x_adv`` into the l_inf ball of radius ``eps`` around ``x`` and into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class FGSM:
    """Fast gradient sign method: x + eps * sign(grad), clipped to [0, 1].

    Arguments:
        eps: l_inf radius, a number in (0, 1].
        exact: plain fp32 (True) or the fast path (False); None reads $INTERPRETGAN_EXACT.
    """

    def __init__(self, eps: float = 0.3, exact: bool | None = None):
        self.eps, self.exact = check_epsilon(eps), fast.resolve_exact(exact)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grad = input_grad(model, x, y, self.exact)
        return (x + self.eps * grad.sign()).clamp_(0.0, 1.0).detach()

    def settings(self) -> dict:
        """The attack's settings as a table row: method, eps, step size, steps, random start, precision (fp32 or the fast path)."""
        return {"method": "FGSM", "eps": round(self.eps, 4), "step": round(self.eps, 4), "steps": 1,
                "random start": False, "precision": "fp32" if self.exact else "fast path"}

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps:g})"


class PGD:
    """Projected gradient descent (Madry et al.), l_inf, k steps of size alpha, random start.

    Arguments:
        eps: l_inf radius, a number in (0, 1].
        alpha: step size (0.01 on MNIST in the authors' code).
        steps: number of steps k.
        random_start: start from x + uniform(-eps, eps) (clipped to [0, 1]).
        exact: plain fp32 (True) or the fast path (False); None reads $INTERPRETGAN_EXACT.
    """

    momentum = False

    def __init__(self, eps: float = 0.3, alpha: float = 0.01, steps: int = 40, random_start: bool = True,
                 exact: bool | None = None):
        self.eps, self.alpha, self.steps, self.random_start = check_epsilon(eps), float(alpha), int(steps), random_start
        self.exact = fast.resolve_exact(exact)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.iterates(model, x, y, (self.steps,))[self.steps]

    def iterates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, at) -> dict[int, torch.Tensor]:
        """The adversarial images after each step count in ``at`` (each in 1..steps), from one run:
        the iterate after k steps is exactly what this attack with ``steps=k`` returns from the same
        random start, so PGD-40 and PGD-100 come out of one 100-step run."""
        at = sorted({int(k) for k in at})
        if not at or at[0] < 1 or at[-1] > self.steps:
            raise ValueError(f"step counts must lie in 1..{self.steps}, got {at}")
        x = x.detach()
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x_adv + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp_(0.0, 1.0)
        g = torch.zeros_like(x)
        out = {}
        for k in range(1, at[-1] + 1):
            grad = input_grad(model, x_adv, y, self.exact)
            if self.momentum:  # M-PGD: sign of the running sum of raw gradients
                g = g + grad
                grad = g
            x_adv = project(x_adv + self.alpha * grad.sign(), x, self.eps)
            if k in at:
                out[k] = x_adv.detach()
        return out

    def settings(self) -> dict:
        """The attack's settings as a table row: method, eps, step size, steps, random start, precision (fp32 or the fast path)."""
        return {"method": type(self).__name__.replace("MPGD", "M-PGD"), "eps": round(self.eps, 4),
                "step": self.alpha, "steps": self.steps, "random start": self.random_start,
                "precision": "fp32" if self.exact else "fast path"}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps:g}, alpha={self.alpha:g}, steps={self.steps}, "
                f"random_start={self.random_start})")


class MPGD(PGD):
    """Momentum PGD as the paper's authors define it (their ATTA code): each step moves by
    alpha * sign(g) with g the running *sum of raw input gradients* (no normalisation, no decay:
    not MI-FGSM). Same arguments as :class:`PGD`."""

    momentum = True


def make_attack(name: str, eps: float = 0.3, dataset: str = "mnist", alpha: float | None = None,
                exact: bool | None = None):
    """An attack from its short name: ``fgsm``, ``pgd<k>`` (e.g. pgd40) or ``mpgd<k>`` (e.g. mpgd40).

    The step size defaults to the authors' value for the dataset (``DEFAULT_STEP``); ``exact`` as in
    :class:`PGD`.
    """
    kind, steps = parse_attack_name(name)
    alpha = DEFAULT_STEP[dataset] if alpha is None else alpha
    if kind == "fgsm":
        return FGSM(eps, exact=exact)
    return (PGD if kind == "pgd" else MPGD)(eps, alpha=alpha, steps=steps, exact=exact)


@dataclass
class AttackResult:
    """Outcome of one attack over a dataset (all tensors on the CPU, in dataset order)."""

    name: str
    labels: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    x_adv: torch.Tensor | None = None

    @property
    def clean_accuracy(self) -> float:
        return (self.pred_clean == self.labels).sum().item() / len(self.labels)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of images whose adversarial version is still classified correctly."""
        return (self.pred_adv == self.labels).sum().item() / len(self.labels)


def batch_size_for(batch_size: int | None, device: str | torch.device, dataset) -> int:
    """``batch_size``, or the fast path's inference batch size for ``dataset``'s images on ``device``."""
    return batch_size or fast.inference_batch_size(device, int(np.prod(dataset.shape)))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
    """Predicted labels (int64, N) for images ``x``, the forward pass on the fast path unless ``exact``."""
    with fast.autocast(x.device, exact):
        return model(fast.to_memory_format(x, exact)).argmax(1)


def run_attack(model: nn.Module, attack, dataset, batch_size: int | None = None,
               device: str | torch.device = "cpu", keep_images: bool = False, progress: bool = True,
               name: str | None = None, exact: bool | None = None) -> AttackResult:
    """Attack every image of ``dataset`` (an :class:`~interpretgan.data.ImageSet`) in eval mode.

    Returns an :class:`AttackResult` with clean and adversarial predictions, and the adversarial
    images (float in [0, 1], on the CPU) when ``keep_images``. ``batch_size`` None picks one for the
    device; ``exact`` (None: the attack's own setting) is used for the predictions.
    """
    exact = getattr(attack, "exact", None) if exact is None else exact
    batch_size = batch_size_for(batch_size, device, dataset)
    preds_c, preds_a, advs = [], [], []
    name = name or repr(attack)
    with eval_mode(model):
        batches = dataset.batches(batch_size, device=device)
        for x, y, _ in tqdm(batches, total=dataset.n_batches(batch_size), desc=name, disable=not progress):
            x_adv = attack(model, x, y)
            preds_c.append(predict(model, x, exact).cpu())
            preds_a.append(predict(model, x_adv, exact).cpu())
            if keep_images:
                advs.append(x_adv.cpu())
    return AttackResult(name, dataset.labels.clone(), torch.cat(preds_c), torch.cat(preds_a),
                        torch.cat(advs) if keep_images else None)


def accuracy(model: nn.Module, dataset, batch_size: int | None = None, device: str | torch.device = "cpu",
             exact: bool | None = None) -> float:
    """Clean accuracy (fraction in [0, 1]) of ``model`` on an ImageSet, in eval mode."""
    batch_size = batch_size_for(batch_size, device, dataset)
    correct = 0
    with eval_mode(model):
        for x, y, _ in dataset.batches(batch_size, device=device):
            correct += int((predict(model, x, exact) == y).sum())
    return correct / len(dataset)


def balanced_accuracy_of(labels: torch.Tensor, predictions: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the fraction of that class predicted right (the mean
    per-class recall; equals accuracy when the classes are balanced)."""
    labels, predictions = labels.cpu(), predictions.cpu()
    recalls = [float((predictions[labels == c] == c).float().mean()) for c in labels.unique().tolist()]
    return sum(recalls) / len(recalls)


@torch.no_grad()
def predictions(model: nn.Module, dataset, batch_size: int | None = None, device: str | torch.device = "cpu",
                exact: bool | None = None) -> torch.Tensor:
    """``model``'s label for every image of an ImageSet (N,), on the CPU, in eval mode."""
    batch_size = batch_size_for(batch_size, device, dataset)
    with eval_mode(model):
        return torch.cat([predict(model, x, exact).cpu() for x, _, _ in dataset.batches(batch_size, device=device)])


def balanced_accuracy(model: nn.Module, dataset, batch_size: int | None = None, device: str | torch.device = "cpu",
                      exact: bool | None = None) -> float:
    """Clean balanced accuracy (mean per-class recall, in [0, 1]) of ``model`` on an ImageSet."""
    return balanced_accuracy_of(dataset.labels, predictions(model, dataset, batch_size, device, exact))


def misclassification_matrix(labels: torch.Tensor, pred_adv: torch.Tensor, num_classes: int = 10) -> np.ndarray:
    """Row-normalised matrix M[true, adversarial] over the misclassified images (paper's Figure 7).

    Each row sums to 1 over the adversarial labels of that true label's misclassified images (a row
    with none is all zero); the diagonal is zero.
    """
    wrong = labels != pred_adv
    m = np.zeros((num_classes, num_classes))
    np.add.at(m, (labels[wrong].numpy(), pred_adv[wrong].numpy()), 1)
    rows = m.sum(1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
