"""Notebook parameters: parsed and checked before any training or file writing.

Who should use it: the second cell of every notebook, ``p = resolve(...)``. Parameters arrive from
papermill as strings too (``-p epsilon 8/255``, ``-p retrain true``); a bad value raises
:class:`ParameterError` naming the parameter and its allowed values.
"""
from __future__ import annotations

import difflib
from fractions import Fraction
from types import ModuleType, SimpleNamespace
from typing import Any, Iterable

DEFAULT_ATTACKS = ("fgsm", "pgd40", "pgd100", "mpgd40")
#: The datasets whose models have explanation generators (``dataset`` of 04_visualize; 07 is CelebA's).
EXPLAINED_DATASETS = ("mnist", "celeba")


def allowed_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of the choice parameters, each defined next to what it names: profiles
    (:data:`interpretgan.profiles.PROFILES`), poolings (:data:`interpretgan.models.POOLINGS`), trainings
    (:data:`interpretgan.training.TRAININGS`). Imported here, on first use, to keep this module free of torch."""
    from .models import POOLINGS
    from .profiles import PROFILES
    from .training import TRAININGS

    return {"profile": tuple(PROFILES), "pooling": POOLINGS, "training": TRAININGS}


class ParameterError(ValueError):
    """A notebook parameter has a value outside its allowed set."""


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` as a lower-case string if it is one of ``allowed``, else ParameterError."""
    allowed = tuple(allowed)
    v = str(value).strip().lower() if value is not None else None
    if v not in allowed:
        raise ParameterError(f"parameter {name!r} must be one of {', '.join(allowed)}; got {value!r}")
    return v


def parse_epsilon(value: Any, name: str = "epsilon") -> float:
    """An l_inf radius from a number or a string such as "0.3" or "8/255"; must lie in (0, 1]."""
    try:
        if isinstance(value, bool):  # True would pass float() as 1.0
            raise TypeError
        eps = float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise ParameterError(f"parameter {name!r} must be a number in (0, 1] such as 0.3 or \"8/255\"; "
                             f"got {value!r}") from None
    if not 0.0 < eps <= 1.0:
        raise ParameterError(f"parameter {name!r} must lie in (0, 1] (images are in [0, 1]); got {value!r}")
    return eps


def parse_attacks(value: Any) -> list[str]:
    """A list of attack names from a list or a comma-separated string; each fgsm, pgd<k> or mpgd<k>."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    from .attacks import STEPS_RULE, parse_attack_name

    bad = []
    for n in names:
        try:
            parse_attack_name(n)
        except ValueError:
            bad.append(n)
    if bad or not names:
        raise ParameterError(f"parameter 'attacks' takes names of the forms fgsm, pgd<k>, mpgd<k> "
                             f"({STEPS_RULE}, e.g. {', '.join(DEFAULT_ATTACKS)}); got {value!r}")
    return list(dict.fromkeys(names))


def parse_layers(value: Any, allowed: Iterable[str] | None = None) -> list[str]:
    """Layer names from "all", a list, or a comma-separated string; each must be one of ``allowed``
    (default: the paper's MNIST model's conv1 ... fc3). Returned in the model's order."""
    if allowed is None:
        from .models import LAYERS as allowed
    allowed = tuple(allowed)
    if isinstance(value, str) and value.strip().lower() == "all":
        return list(allowed)
    items = value.split(",") if isinstance(value, str) else list(value) if value is not None else []
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ParameterError(f"parameter 'layers' must be \"all\" or names among {', '.join(allowed)} "
                             f"(the model's layers); got {value!r}")
    return [n for n in allowed if n in names]


def parse_images(value: Any, n_test: int = 10_000) -> list[int]:
    """Test-image indices from a list or a comma-separated string; each a whole number in [0, n_test)."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    try:
        out = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        out = []
    if not out or any(not 0 <= i < n_test for i in out):
        raise ParameterError(f"parameter 'images' takes test-image indices in 0..{n_test - 1} (a list or \"0, 7, 42\"); "
                             f"got {value!r}")
    return out


def parse_attack(value: Any) -> str:
    """One attack name: fgsm, pgd<k> or mpgd<k>."""
    try:
        names = parse_attacks(value) if value not in (None, "") else []
    except ParameterError:
        names = []
    if len(names) != 1:
        from .attacks import STEPS_RULE

        raise ParameterError(f"parameter 'attack' takes one name of the forms fgsm, pgd<k>, mpgd<k> ({STEPS_RULE}, "
                             f"e.g. pgd40); got {value!r}")
    return names[0]


def parse_optional_int(value: Any, name: str, minimum: int = 1) -> int | None:
    """None (or "None": the profile's default) or a whole number >= ``minimum``."""
    if value is None or str(value).strip().lower() in ("none", ""):
        return None
    return parse_int(value, name, minimum)


def parse_int(value: Any, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number >= ``minimum`` (and <= ``maximum`` when given; strings accepted)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        v = int(str(value).strip())
        if v < minimum or (maximum is not None and v > maximum):
            raise ValueError
    except ValueError:
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ParameterError(f"parameter {name!r} must be a whole number {bound}; got {value!r}") from None
    return v


#: The largest seed: seeds are multiplied and offset (seed * 1,000,003 + epoch) into torch's 64-bit seed.
MAX_SEED = 2**32 - 1


def parse_bool(value: Any, name: str) -> bool:
    """True/False from a bool or the strings true/false/yes/no/1/0."""
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "yes", "1"):
        return True
    if s in ("false", "no", "0", ""):
        return False
    raise ParameterError(f"parameter {name!r} must be one of True, False; got {value!r}")


def parse_exact(value: Any) -> bool:
    """The ``exact`` switch: True (plain fp32), False (the fast path), or None/"None" for
    ``$INTERPRETGAN_EXACT`` (else False)."""
    from .fast import resolve_exact

    unset = value is None or str(value).strip().lower() in ("none", "")
    return resolve_exact(None if unset else parse_bool(value, "exact"))


def parse_data_root(value: Any) -> str | None:
    """None (or "None", ""): ``$INTERPRETGAN_DATA``, else ``<repo>/data``; else a folder that exists. The folder the
    run will read (this value, else ``$INTERPRETGAN_DATA`` when set) is checked here, with the other parameters, by
    the data loaders' own check (``interpretgan.data._existing_root``), so a bad root stops the notebook in its
    first cells instead of where it first reads data. ``<repo>/data`` is left to the loaders (torchvision may
    download MNIST into it)."""
    import os

    from . import paths
    from .data import DataError, _existing_root as existing_root

    given = None if value is None or str(value).strip() in ("", "None") else str(value)
    source = "parameter 'data_root'" if given else "INTERPRETGAN_DATA (parameter 'data_root' is None)"
    if given is None and not os.environ.get("INTERPRETGAN_DATA"):
        return None
    try:
        existing_root(paths.data_root(given))
    except DataError as err:
        raise ParameterError(f"{source} must be an existing folder (None: $INTERPRETGAN_DATA, else data/ at the "
                             f"repository root); got {given if given else os.environ['INTERPRETGAN_DATA']!r}: "
                             f"{err}") from None
    return given


def parse_cifar_test(value: Any) -> int | str | None:
    """06's ``cifar_test``: None (or "None") for the profile's CIFAR-10 test images, "all" for every attack on all
    10,000, or a positive count (a fixed random subset)."""
    if value is None or str(value).strip().lower() in ("none", ""):
        return None
    if str(value).strip().lower() == "all":
        return "all"
    try:
        n = int(str(value).strip().replace("_", "").replace(",", ""))  # True and 2.5 fail here
    except ValueError:
        n = 0
    if n < 1:
        raise ParameterError(f"parameter 'cifar_test' must be None (the profile's), 'all' or a positive number of "
                             f"test images; got {value!r}")
    return n


_PARSERS = {
    "profile": lambda v: choice("profile", v, allowed_choices()["profile"]),
    "pooling": lambda v: choice("pooling", v, allowed_choices()["pooling"]),
    "training": lambda v: choice("training", v, allowed_choices()["training"]),
    "epsilon": parse_epsilon,
    "layers": parse_layers,
    "images": parse_images,
    "attack": parse_attack,
    "n_images": lambda v: parse_optional_int(v, "n_images"),
    "attacks": parse_attacks,
    "seed": lambda v: parse_int(v, "seed", 0, MAX_SEED),
    "retrain": lambda v: parse_bool(v, "retrain"),
    "baselines": lambda v: parse_bool(v, "baselines"),
    "cifar": lambda v: None if v is None or str(v).strip().lower() in ("none", "") else parse_bool(v, "cifar"),
    "cifar_test": parse_cifar_test,
    "exact": parse_exact,
    "data_root": lambda v: parse_data_root(v),
    "dataset": lambda v: choice("dataset", v, EXPLAINED_DATASETS),
}


def default_epsilon(dataset: Any, epsilon: Any = None) -> Any:
    """``epsilon`` unless it is None (or "None"), then the paper's for ``dataset``: 0.3 for MNIST, 2/255 for
    CelebA (``dataset`` checked as the ``dataset`` parameter)."""
    dataset = choice("dataset", dataset, EXPLAINED_DATASETS)
    if epsilon is None or str(epsilon).strip().lower() in ("none", ""):
        return {"mnist": 0.3, "celeba": 2 / 255}[dataset]
    return epsilon


def _celeba_parser(name: str, value: Any, data_root: Any) -> Any:
    """``layers`` among the CelebA VGG16's, or ``images`` among the CelebA test split's indices."""
    if name == "layers":
        from .models import FaceVGG16

        return parse_layers(value, FaceVGG16.layer_names)
    from .data import celeba_split_size

    root = None if data_root in (None, "", "None") else str(data_root)
    return parse_images(value, celeba_split_size("test", root))


#: Names a notebook's namespace holds besides its parameters before ``resolve`` runs (IPython's own).
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def unknown_parameters(namespace: dict[str, Any], known: Iterable[str]) -> list[str]:
    """The names in a notebook's ``namespace`` that look like parameters (not private, not a module, class
    or function, not IPython's) but are not among ``known``: papermill injects a misspelled ``-p epsilom
    0.5`` as a variable that nothing reads."""
    known = set(known)
    return sorted(n for n, v in namespace.items()
                  if not n.startswith("_") and n not in known and n not in _KERNEL_NAMES
                  and not isinstance(v, (ModuleType, type)) and not callable(v))


def check_known(namespace: dict[str, Any], known: Iterable[str]) -> None:
    """Raise :class:`ParameterError` for the first of :func:`unknown_parameters`, naming the closest of
    ``known`` (a notebook's parameters)."""
    known = list(known)
    stray = unknown_parameters(namespace, known)
    if stray:
        close = difflib.get_close_matches(stray[0], known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(f"unknown parameter {stray[0]!r}{hint}; this notebook's parameters: {', '.join(known)}")


def resolve(*, extra_choices: dict[str, tuple[str, ...]] | None = None, namespace: dict[str, Any] | None = None,
            **params: Any) -> SimpleNamespace:
    """Check and parse a notebook's parameters; returns them as attributes, plus ``settings``
    (the chosen :class:`~interpretgan.profiles.Profile`). Raises ParameterError on the first bad one.
    ``extra_choices`` widens a choice parameter for one notebook, e.g. ``{"training": ("both",)}``.
    ``namespace`` (the notebook's ``globals()``) is checked for values set that are not parameters of
    this notebook (a misspelled ``-p epsilom 0.5``): the error names the closest parameter."""
    from .profiles import get_profile

    if namespace is not None:
        check_known(namespace, params)
    extra_choices = extra_choices or {}
    allowed = allowed_choices()
    out = {}
    unknown = [name for name in params if name not in _PARSERS]
    if unknown:
        raise ParameterError(f"unknown parameter {unknown[0]!r}; known: {', '.join(_PARSERS)}")
    dataset = _PARSERS["dataset"](params["dataset"]) if "dataset" in params else "mnist"
    for name, value in params.items():
        if name in extra_choices:
            out[name] = choice(name, value, allowed[name] + tuple(extra_choices[name]))
        elif dataset == "celeba" and name in ("layers", "images"):
            out[name] = _celeba_parser(name, value, params.get("data_root"))
        else:
            out[name] = _PARSERS[name](value)
    ns = SimpleNamespace(**out)
    if "profile" in out:
        ns.settings = get_profile(out["profile"])
    return ns
