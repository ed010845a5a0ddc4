"""Trained classifiers through the artifact cache: load what exists, build what is missing.

Who should use it: notebooks and anything that needs "the natural max-pool MNIST model of the
default profile". :func:`classifier` looks, in order, for

1. a finished checkpoint in the artifact cache under the key of these exact settings,
2. shipped weights in ``weights/`` with the same key (unless ``retrain``),
3. otherwise it trains (resuming an interrupted run from its last epoch) and caches the result.

Example::

    >>> model, info = classifier(profile="default", pooling="avg")
    >>> info["source"], info["test_accuracy"]
    ('shipped', 0.99...)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from . import cache, fast, gan
from .attacks import PGD, AttackResult, balanced_accuracy_of, make_attack, predictions, run_attack
from .data import CELEBA_SUBSET_DIR, DATASETS, DataError, attribute_labels, celeba_source, load
from .models import JUDGE_ARCHS, build, freeze
from .profiles import get_profile
from .training import TRAININGS, at_buffer_reset, rank_and_world, set_seed, train_atta, train_natural

ARCH_VERSION = 1  # bump when the model or the training loop changes what a setting produces
ATTA_VERSION = 1  # bump when the adversarial training loop changes what a setting produces


def dataset_of(settings: dict[str, Any]) -> str:
    """The dataset (one of :data:`~interpretgan.data.DATASETS`) of a classifier's settings (the natural MNIST
    models' keys spell it "mnist32")."""
    return settings.get("dataset", "mnist32").replace("mnist32", "mnist")


def celeba_data_tag(data_root: str | os.PathLike | None = None) -> dict[str, str]:
    """What a CelebA model's cache key records of its data: ``{}`` for the 6,000-face subset (so the keys of
    the shipped CelebA weights, trained on it, stay as they are), ``{"data": "celeba"}`` when ``data_root``
    (None: $INTERPRETGAN_DATA) holds the whole data set, so models of the two never mix. Without any CelebA
    under the root the subset is assumed: shipped weights still load."""
    try:
        source = celeba_source(data_root)
    except DataError:
        return {}
    return {} if source == CELEBA_SUBSET_DIR else {"data": source}


def classifier_settings(profile: str = "default", pooling: str = "max", training: str = "natural",
                        seed: int = 0, exact: bool | None = None, dataset: str = "mnist",
                        arch: str | None = None, data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every setting that changes the trained classifier (its cache key is made from these).

    ``dataset`` "mnist" uses the paper's SmallCNN; "cifar10" takes ``arch`` "vgg16" or "wrn", sized
    by the profile (``Profile.cifar_archs``) and trained adversarially only, as in the paper; "celeba"
    is the gender VGG16 (:class:`~interpretgan.models.FaceVGG16`) sized and trained naturally as the
    profile's ``celeba`` schedule says; its key records the CelebA source under ``data_root`` (see
    :func:`celeba_data_tag`).
    """
    p = get_profile(profile)
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {list(TRAININGS)}, got {training!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if dataset == "celeba":
        if arch not in (None, "face_vgg16"):
            raise ValueError(f"arch for celeba must be 'face_vgg16', got {arch!r}")
        if training != "natural":
            raise ValueError("the CelebA model is trained naturally only (training='natural'), as in the paper")
        f = p.celeba
        return {"kind": "classifier", "version": ARCH_VERSION, "dataset": "celeba", "arch": "face_vgg16",
                "model": {"arch": "face_vgg16", "image_size": f.image_size, "width": f.width, "hidden": f.hidden},
                "pooling": pooling, "training": "natural", "seed": int(seed), "n_train": f.n_train, "n_train_seed": 0,
                "epochs": f.epochs, "lr": f.lr, "lr_milestones": list(f.lr_milestones), "lr_gamma": f.lr_gamma,
                "optimizer": f.optimizer, "momentum": 0.9, "weight_decay": f.weight_decay,
                "batch_size": f.batch_size, "flip": f.flip, "exact": fast.resolve_exact(exact),
                **celeba_data_tag(data_root)}
    if dataset == "cifar10":
        if arch not in p.cifar_archs:
            raise ValueError(f"arch for cifar10 must be one of {list(p.cifar_archs)}, got {arch!r}")
        if training != "atta":
            raise ValueError("CIFAR-10 models are trained adversarially only (training='atta'), as in the paper")
    elif arch not in (None, "smallcnn"):
        raise ValueError(f"arch for mnist must be 'smallcnn', got {arch!r}")
    if training == "atta":
        sched = p.atta[dataset]
        model = {"arch": "smallcnn", "dropout": 0.5} if dataset == "mnist" else dict(p.cifar_archs[arch])
        if dataset == "cifar10":
            sched = dataclasses.replace(sched, **p.cifar_schedule.get(arch, {}))
        return {"kind": "classifier", "version": ARCH_VERSION, "atta_version": ATTA_VERSION, "dataset": dataset,
                "arch": model["arch"], "model": model, "pooling": pooling, "training": "atta", "seed": int(seed),
                "n_train_seed": 0, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sched.as_dict().items()},
                "exact": fast.resolve_exact(exact)}
    return {"kind": "classifier", "version": ARCH_VERSION, "dataset": "mnist32", "arch": "smallcnn",
            "pooling": pooling, "dropout": 0.5, "training": training, "seed": int(seed),
            "n_train": p.n_train, "n_train_seed": 0, "epochs": p.epochs, "lr": p.lr,
            "lr_milestones": list(p.lr_milestones), "lr_gamma": p.lr_gamma, "momentum": 0.9,
            "weight_decay": 0.0, "batch_size": p.batch_size, "exact": fast.resolve_exact(exact)}


def image_size_of(settings: dict[str, Any]) -> int | None:
    """The side in pixels of a classifier's input when its dataset has a choice (CelebA), else None."""
    return settings.get("model", {}).get("image_size", settings.get("image_size"))


def test_set(profile: str, settings: dict[str, Any], data_root: str | None = None):
    """The profile's test images for a classifier's dataset: a fixed subset (seed 0) of the test split of
    ``profile``'s size for it (MNIST ``n_test``, CIFAR-10 ``n_cifar_test``, CelebA ``celeba.n_test``)."""
    p, dataset = get_profile(profile), dataset_of(settings)
    n = {"mnist": p.n_test, "cifar10": p.n_cifar_test, "celeba": p.celeba.n_test}[dataset]
    return load(dataset, "test", data_root, size=image_size_of(settings)).subset(n)


def shipped_name(settings: dict[str, Any], profile: str = "default") -> str:
    """File name of these settings' weights in ``weights/`` (other profiles than the default add ``-<profile>``)."""
    dataset = dataset_of(settings)
    tail = "" if profile == "default" else f"-{profile}"
    return (f"{dataset}-{settings['arch']}-{settings['pooling']}-{settings['training']}-seed{settings['seed']}{tail}"
            ".safetensors")


def _build(settings: dict[str, Any]) -> nn.Module:
    if "model" in settings:
        kwargs = {k: v for k, v in settings["model"].items() if k != "arch"}
        return build(settings["model"]["arch"], pooling=settings["pooling"], **kwargs)
    return build(settings["arch"], pooling=settings["pooling"], dropout=settings["dropout"])


def _train(model: nn.Module, settings: dict[str, Any], test, data_root, checkpoint, device, progress, exact,
           on_epoch=None):
    """Train ``model`` on these settings (natural or ATTA; an attribute reader on its attribute); returns the
    history. ``on_epoch`` (ATTA only): see :func:`~interpretgan.training.train_atta`."""
    dataset = dataset_of(settings)
    train = load(dataset, "train", data_root, size=image_size_of(settings)).subset(settings["n_train"],
                                                                                    seed=settings["n_train_seed"])
    if "attribute" in settings:
        train = attribute_labels(train, settings["attribute"], balanced=settings["balanced"])
    common = dict(epochs=settings["epochs"], lr=settings["lr"], lr_milestones=tuple(settings["lr_milestones"]),
                  lr_gamma=settings["lr_gamma"], momentum=settings["momentum"],
                  weight_decay=settings["weight_decay"], batch_size=settings["batch_size"], seed=settings["seed"],
                  checkpoint=checkpoint, device=device, progress=progress, exact=exact)
    if settings["training"] == "natural":
        return train_natural(model, train, test, optimizer=settings.get("optimizer", "sgd"),
                             flip=settings.get("flip", False), **common)
    check = PGD(settings["eps"], alpha=settings["eval_step"], steps=settings["eval_steps"], exact=exact)
    return train_atta(model, train, test, eps=settings["eps"], step_size=settings["step"], beta=settings["beta"],
                      reset_every=settings["reset_every"], augment=settings["augment"], eval_attack=check,
                      warmup_epochs=settings.get("warmup_epochs", 0), on_epoch=on_epoch,
                      eval_set=test.subset(settings["n_eval"], seed=1), **common)


def _through_cache(folder, key: str, filename: str, retrain: bool, train) -> tuple[dict, str, Any]:
    """Weights and history of the settings whose cache entry is ``folder`` and cache key ``key``: the finished
    cache entry (``folder / filename``), else the shipped weights with that key (unless ``retrain``), else
    ``train()`` -> ``(state_dict, history)``, saved to the cache (by rank 0 under torchrun).
    Returns ``(state_dict, source, history)`` with source "cache" | "shipped" | "trained"."""
    final = folder / filename
    if final.is_file():
        history = cache.read_checkpoint(folder / "history.pt")
        state = cache.read_weights(final) if history is not None else None  # a damaged file is moved aside
        if state is not None:
            return state, "cache", history
        if final.is_file():
            os.replace(final, final.with_name(final.name + ".refused"))  # its history was refused: rebuild the entry
    if not retrain and (f := cache.shipped(key)) is not None:
        return cache.load_weights(f), "shipped", cache.read_manifest()["files"][f.name].get("history")
    state, history = train()
    if rank_and_world()[0] == 0:
        cache.save_checkpoint(history, folder / "history.pt")
        cache.save_weights(state, final, metadata={"key": key})
    return state, "trained", history


def _ready(model: nn.Module, exact: bool) -> nn.Module:
    """``model`` in eval mode, frozen, on the fast path's memory format."""
    return freeze(fast.prepare(model.eval(), exact))


def _trained(model: nn.Module, kind: str, settings: dict[str, Any], test, data_root, device, progress: bool,
             retrain: bool, stages_as: str | None = None) -> dict[str, Any]:
    """Give ``model`` the weights of ``settings`` through :func:`_through_cache` (training it with :func:`_train`
    when needed, from a shipped training stage when one is ahead of the artifact cache's checkpoint, and shipping
    stages as ``weights/<stages_as>`` when given), ready for use; returns the info dict: ``key``,
    ``settings``, ``source``, ``history``, ``test_accuracy`` (on ``test``, measured now), ``n_test``, and after a
    training ``resumed_segments`` (those of the shipped stage it went on from, see :func:`training_segments`; [] for
    none)."""
    exact, key, folder = settings["exact"], cache.settings_key(settings), cache.entry(kind, settings)
    resumed: list[dict] = []

    def fit():
        checkpoint = folder / "checkpoint.pt"
        if not retrain:
            resumed.extend(_resume_from_stage(key, checkpoint))
        on_epoch = (_stage_shipper(settings, key, stages_as, list(resumed), device, torch.get_num_threads())
                    if stages_as else None)
        history = _train(model, settings, test, data_root, checkpoint, device, progress, exact, on_epoch)
        return model.state_dict(), history  # after training: the fast path may have replaced the tensors

    state, source, history = _through_cache(folder, key, "model.safetensors", retrain, fit)
    model.load_state_dict(state)
    _ready(model, exact)
    pred = predictions(model, test, device=device, exact=exact)
    return {"key": key, "settings": settings, "source": source, "history": history,
            "test_accuracy": float((pred == test.labels).float().mean()),
            "balanced_accuracy": balanced_accuracy_of(test.labels, pred), "n_test": len(test),
            **({"resumed_segments": resumed} if source == "trained" else {})}


# ----------------------------------------------------------------------------------------------
# Training stages: a training longer than a session, carried to the next machine through weights/
# ----------------------------------------------------------------------------------------------

def training_segments(history: dict[str, list], prior: list[dict], where: str) -> list[dict]:
    """Where a training's epochs ran: ``prior`` (the segments of the stage it resumed from, each ``{"epochs":
    [first, last], "on": machine, "minutes": float}``, epochs 1-based and inclusive) and, after them, the epochs of
    ``history`` up to its last, on ``where``, with their minutes from the history's ``seconds`` (one segment with the
    last of ``prior`` when that ran on ``where`` too)."""
    done, end = (prior[-1]["epochs"][1] if prior else 0), len(history["epoch"])
    if end <= done:
        return list(prior)
    minutes = sum(history["seconds"][done:end]) / 60
    if prior and prior[-1]["on"] == where:
        last = prior[-1]
        return [*prior[:-1], {"epochs": [last["epochs"][0], end], "on": where,
                              "minutes": round(last["minutes"] + minutes, 1)}]
    return [*prior, {"epochs": [done + 1, end], "on": where, "minutes": round(minutes, 1)}]


def trained_on_text(segments: list[dict]) -> str:
    """The manifest's ``trained_on`` for these segments: "<machine>, 118 min" for one; for a training carried
    between machines, each run of epochs with its machine and minutes, then the minutes in all."""
    if len(segments) == 1:
        return f"{segments[0]['on']}, {segments[0]['minutes']:.0f} min"
    parts = [f"epochs {s['epochs'][0]}-{s['epochs'][1]} on {s['on']}, {s['minutes']:.0f} min" for s in segments]
    return "; ".join(parts) + f" ({sum(s['minutes'] for s in segments):.0f} min in all)"


def _resume_from_stage(key: str, checkpoint) -> list[dict]:
    """Put the shipped training stage of ``key`` in place of the artifact cache's ``checkpoint`` when the stage is
    further on (or the checkpoint is missing); returns the stage's segments ([] without a stage)."""
    found = cache.shipped_stage(key)
    if found is None:
        return []
    f, info = found
    here = cache.read_checkpoint(checkpoint, mmap=True)  # only its epoch: the tensors (614 MB for a WRN) stay unread
    here_epoch = None if here is None else int(here["epoch"])
    del here  # let go of the mapped file before it is replaced
    if here_epoch is None or here_epoch < info["epoch"]:
        cache.save_checkpoint(cache.load_stage(f), checkpoint)
        print(f"resuming from the training stage weights/{f.name} (epoch {info['epoch']} of {info['epochs']})",
              flush=True)
    return info.get("segments", [])


def _stage_shipper(settings: dict[str, Any], key: str, name: str, prior: list[dict], device, threads: int):
    """An ``on_epoch`` callback for :func:`~interpretgan.training.train_atta` that ships the checkpoint as the
    training stage ``weights/<name>`` after each epoch that ends a buffer-reset period (but the last); its
    epochs after ``prior``'s count as trained on ``device`` with ``threads``."""
    def on_epoch(state: dict[str, Any]) -> None:
        if at_buffer_reset(state["epoch"], settings.get("reset_every")) and state["epoch"] < settings["epochs"]:
            where = fast.where_it_ran(device, settings["exact"], threads)
            cache.ship_stage(state, name, key, {"epoch": state["epoch"], "epochs": settings["epochs"],
                                                "segments": training_segments(state["history"], prior, where)})
    return on_epoch


def stage_name(settings: dict[str, Any], profile: str = "default") -> str:
    """File name of these settings' training stage in ``weights/``."""
    return shipped_name(settings, profile).removesuffix(".safetensors") + ".stage.safetensors"


def classifier(profile: str = "default", *, pooling: str = "max", training: str = "natural", seed: int = 0,
               data_root: str | None = None, retrain: bool = False, device: str | torch.device | None = None,
               progress: bool = True, exact: bool | None = None, dataset: str = "mnist",
               arch: str | None = None, ship_stages: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier for these settings, in eval mode on ``device``, and an info dict.

    info: ``key`` (cache key), ``settings``, ``source`` ("cache" | "shipped" | "trained"),
    ``history`` (per-epoch training history, see :func:`~interpretgan.training.train_natural`),
    ``test_accuracy`` (fraction of the profile's test images, measured now), ``n_test``.
    ``retrain=True`` ignores the shipped weights (your own cached runs are still used). ``exact``
    (None: $INTERPRETGAN_EXACT) trains and evaluates in plain fp32 instead of the fast path.
    ``training="atta"`` trains adversarially (ATTA-1 + TRADES, the profile's ``atta`` schedule);
    ``dataset="cifar10"`` with ``arch`` "vgg16" | "wrn" gives the CIFAR-10 models of Table 3. Under
    ``torchrun`` every process trains its shard and rank 0 writes the cache. A training resumes from a training
    stage shipped in ``weights/`` when it is further on than the artifact cache; ``ship_stages=True``
    (maintainers, ATTA) ships one there after each epoch that ends a buffer-reset period, so a training longer than
    a session goes on, on another machine, from the last stage shipped.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = classifier_settings(profile, pooling, training, seed, exact, dataset, arch, data_root)
    set_seed(seed)  # the initialisation
    model = _build(settings).to(device)
    test = test_set(profile, settings, data_root)
    return model, _trained(model, "classifiers", settings, test, data_root, device, progress, retrain,
                           stage_name(settings, profile) if ship_stages and training == "atta" else None)


def classifier_source(profile: str = "default", *, pooling: str = "max", training: str = "natural", seed: int = 0,
                      data_root: str | None = None, exact: bool | None = None, dataset: str = "mnist",
                      arch: str | None = None) -> str | None:
    """Where :func:`classifier` would find these weights without training: "cache" (a finished entry in the
    artifact folder), "shipped" (``weights/``), or None (it would train). Reads nothing but names and the manifest."""
    settings = classifier_settings(profile, pooling, training, seed, exact, dataset, arch, data_root)
    key, folder = cache.settings_key(settings), cache.entry_folder("classifiers", settings)
    if (folder / "model.safetensors").is_file() and (folder / "history.pt").is_file():
        return "cache"
    return "shipped" if key in {i.get("key") for i in cache.read_manifest()["files"].values()} else None


def adversarial_set(model: nn.Module, info: dict[str, Any], attack: str, *, epsilon: float, n_images: int | None,
                    seed: int = 0, data_root: str | None = None, device: str | torch.device | None = None,
                    batch_size: int | None = None, progress: bool = True) -> AttackResult:
    """``attack`` (a name such as ``pgd40``) run on a fixed subset of ``n_images`` test images against
    the classifier described by ``info`` (from :func:`classifier`), through the artifact cache.

    The subset is the same for every model and attack (subset seed 0); ``seed`` seeds the attack's
    random start. The attack runs on the fast path unless the classifier was built ``exact``.
    Returns the :class:`~interpretgan.attacks.AttackResult` with the adversarial images.
    """
    device = torch.device(device or next(model.parameters()).device)
    exact = info["settings"]["exact"]
    dataset = dataset_of(info["settings"])
    atk = make_attack(attack, epsilon, dataset=dataset, exact=exact)
    settings = {"kind": "adversarial", "classifier": info["key"], "attack": repr(atk), "n_images": n_images,
                "subset_seed": 0, "seed": int(seed), "exact": exact}
    f = cache.entry("adversarial", settings) / "result.pt"
    if (r := cache.read_checkpoint(f)) is not None:
        return AttackResult(attack, r["labels"], r["pred_clean"], r["pred_adv"], r["x_adv"])
    test = load(dataset, "test", data_root, size=image_size_of(info["settings"])).subset(n_images)
    torch.manual_seed(seed)
    result = run_attack(model, atk, test, batch_size=batch_size, device=device, keep_images=True,
                        progress=progress, name=attack)
    cache.save_checkpoint({"labels": result.labels, "pred_clean": result.pred_clean, "pred_adv": result.pred_adv,
                           "x_adv": result.x_adv, "indices": test.indices}, f)
    return result


def ship_classifier(profile: str = "default", pooling: str = "max", training: str = "natural", seed: int = 0,
                    exact: bool | None = None, dataset: str = "mnist", arch: str | None = None,
                    dtype: torch.dtype | None = None, trained_on: str | None = None) -> str:
    """Copy the cached classifier of these settings into ``weights/`` (maintainers' tool; ``dtype``
    e.g. torch.float16 halves the file; ``trained_on``, e.g. "Intel Xeon (AMX), bf16 autocast", is recorded in
    the manifest, since the fast path's precision depends on the machine and is not in the key); returns its name."""
    settings = classifier_settings(profile, pooling, training, seed, exact, dataset, arch)
    return _ship("classifiers", settings, "model.safetensors", shipped_name(settings, profile), "classifier", dtype,
                 with_accuracy=True, trained_on=trained_on)


def _ship(kind: str, settings: dict[str, Any], filename: str, name: str, maker: str, dtype: torch.dtype | None,
          with_accuracy: bool = False, trained_on: str | None = None) -> str:
    """Copy the finished cache entry of ``settings`` (``filename`` in the ``kind`` folder) into ``weights/<name>``
    with its history (and last test accuracy, and ``trained_on`` when given); ``maker`` names the function that
    fills the cache. Returns ``name``."""
    folder = cache.entry(kind, settings)
    if not (folder / filename).is_file():
        raise FileNotFoundError(f"nothing cached for these settings in {folder}; run {maker}() first")
    history = cache.load_checkpoint(folder / "history.pt")
    extra = {"history": history, **({"test_accuracy": history["test_accuracy"][-1]} if with_accuracy else {}),
             **({"trained_on": trained_on} if trained_on else {})}
    cache.ship(cache.load_weights(folder / filename), name, cache.settings_key(settings), settings, extra=extra,
               dtype=dtype)
    return name


# ----------------------------------------------------------------------------------------------
# InterpretGAN explanation generators, one per classifier layer
# ----------------------------------------------------------------------------------------------

def prior_of(profile: str, dataset: str = "mnist"):
    """The profile's :class:`~interpretgan.profiles.GANPrior` for ``dataset`` (MNIST: ``gan_prior``, CelebA:
    ``celeba.gan_prior``; CIFAR-10 has no explainers), or None where its explainers are fitted from nothing."""
    p = get_profile(profile)
    return {"mnist": p.gan_prior, "celeba": p.celeba.gan_prior}.get(dataset)


def explainer_settings(profile: str = "default", pooling: str = "max", training: str = "natural", layer: str = "conv1",
                       seed: int = 0, exact: bool | None = None, interpretability: float | None = None,
                       pixel_loss: bool = False, classifier_seed: int = 0, schedule_factor: int = 1,
                       dataset: str = "mnist", data_root: str | os.PathLike | None = None,
                       warm: bool | None = None) -> dict[str, Any]:
    """Every setting that changes a fitted explanation generator: the classifier's cache key, the layer,
    the profile's :class:`~interpretgan.gan.GANSettings` (``interpretability`` overrides lambda;
    ``pixel_loss`` gives the baseline inverter with the profile's ``inverter_images`` schedule;
    ``schedule_factor`` k shows k times the images at every scale, checkpointing k times less often: the
    scaling curve) and the seed. ``dataset`` "celeba" takes the profile's ``celeba.gan`` (the inverter:
    ``celeba.inverter_images``).

    ``warm`` (None: whenever the profile has a ``gan_prior`` for the data set and no other option above is given)
    warm-starts the fit from the profile's prior (:class:`~interpretgan.profiles.GANPrior`) on its ``warm``
    schedule; the settings then name the prior's own cache key under ``prior``. ``warm=False`` gives the
    settings (and cache keys) of fits from nothing, as before priors existed."""
    p = get_profile(profile)
    prior = prior_of(profile, dataset)
    plain = not pixel_loss and interpretability is None and schedule_factor == 1
    if warm is None:
        warm = prior is not None and plain
    if warm and (prior is None or not plain):
        raise ValueError(f"warm=True needs a profile with a prior for {dataset} ({profile} has "
                         f"{'none' if prior is None else 'one'}) and none of pixel_loss, interpretability, "
                         f"schedule_factor")
    gan_settings = p.celeba.gan if dataset == "celeba" else p.gan
    if pixel_loss:
        gan_settings = dataclasses.replace(gan_settings, pixel_loss=True, interpretability=0.0,
                                           images=p.celeba.inverter_images if dataset == "celeba" else p.inverter_images)
    elif interpretability is not None:
        gan_settings = dataclasses.replace(gan_settings, interpretability=float(interpretability),
                                           images=p.ablation_images)
    if schedule_factor != 1:
        if int(schedule_factor) != schedule_factor or schedule_factor < 1:
            raise ValueError(f"schedule_factor must be a whole number >= 1, got {schedule_factor!r}")
        k = int(schedule_factor)
        gan_settings = dataclasses.replace(gan_settings, images=tuple(k * n for n in gan_settings.images),
                                           checkpoint_every=k * gan_settings.checkpoint_every)
    clf = classifier_settings(profile, pooling, training, classifier_seed, exact, dataset, data_root=data_root)
    out = {"kind": "explainer", "version": 2, "classifier": cache.settings_key(clf), "layer": layer,
           "gan": gan_settings.as_dict(), "seed": int(seed), "exact": clf["exact"]}
    if warm:
        out["gan"] = prior.warm_for(layer).as_dict()
        out["prior"] = cache.settings_key(explainer_settings(
            profile, prior.pooling, prior.training, prior.layer, exact=exact, schedule_factor=prior.schedule_factor,
            dataset=dataset, data_root=data_root, warm=False))
    return out


def explainer(profile: str = "default", *, pooling: str = "max", training: str = "natural", layer: str = "conv1",
              seed: int = 0, data_root: str | None = None, retrain: bool = False, device: str | torch.device | None = None,
              progress: bool = True, exact: bool | None = None, interpretability: float | None = None,
              pixel_loss: bool = False, classifier_model: tuple[nn.Module, dict] | None = None,
              classifier_seed: int = 0, schedule_factor: int = 1, dataset: str = "mnist", warm: bool | None = None):
    """The fitted InterpretGAN explainer for ``layer`` of the classifier these settings describe, through
    the artifact cache (then the shipped weights in ``weights/``, then fitting, resumable); returns
    ``(explainer, info)`` with info ``key``, ``settings``, ``source``, ``history``, ``folder`` (where the
    sample grids are). ``classifier_model`` passes an already loaded ``(model, info)`` of
    :func:`classifier` for these settings; ``schedule_factor`` k fits on k times the profile's images
    (see :func:`explainer_settings`); ``dataset`` "celeba" explains the CelebA gender model; ``warm`` as in
    :func:`explainer_settings` (the prior comes through the cache too, and is fitted first where needed)."""
    settings = explainer_settings(profile, pooling, training, layer, seed, exact, interpretability, pixel_loss,
                                  classifier_seed, schedule_factor, dataset, data_root, warm)
    exact = settings["exact"]
    model, cinfo = classifier_model or classifier(profile, pooling=pooling, training=training, seed=classifier_seed,
                                                  data_root=data_root, retrain=retrain, device=device,
                                                  progress=progress, exact=exact, dataset=dataset)
    if cinfo["key"] != settings["classifier"]:
        raise ValueError("classifier_model does not match these settings")
    if layer not in model.layer_names:
        raise ValueError(f"layer must be one of {list(model.layer_names)}, got {layer!r}")
    device = next(model.parameters()).device
    key = cache.settings_key(settings)
    gs = gan.GANSettings(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in settings["gan"].items()})
    folder = cache.entry("explainers", settings)

    def fit():
        p = get_profile(profile)
        size = image_size_of(cinfo["settings"])
        train = load(dataset, "train", data_root, size=size).subset(gs.n_train, seed=0)
        monitor = load(dataset, "test", data_root, size=size).subset(p.n_gan_monitor, seed=2)
        prior = None
        if "prior" in settings:
            pr = prior_of(profile, dataset)
            same = (pr.pooling, pr.training) == (pooling, training) and classifier_seed == 0
            prior = explainer(profile, pooling=pr.pooling, training=pr.training, layer=pr.layer, data_root=data_root,
                              device=device, progress=progress, exact=exact, schedule_factor=pr.schedule_factor,
                              dataset=dataset, warm=False, classifier_model=(model, cinfo) if same else None)[0]
        expl, history = gan.fit_layer(model, layer, train, gs, monitor_set=monitor, seed=seed,
                                      checkpoint=folder / "checkpoint.pt", samples_dir=folder / "samples",
                                      device=device, progress=progress, exact=exact, prior=prior)
        return gan.explainer_state(expl), history

    weights, source, history = _through_cache(folder, key, "explainer.safetensors", retrain, fit)
    expl = gan.build_explainer(model, layer, gs, weights, device)
    return expl, {"key": key, "settings": settings, "source": source, "history": history, "folder": folder,
                  "classifier": cinfo}


def ship_explainer(profile: str = "default", pooling: str = "max", training: str = "natural", layer: str = "conv1",
                   seed: int = 0, exact: bool | None = None, schedule_factor: int = 1, dataset: str = "mnist",
                   pixel_loss: bool = False, warm: bool | None = None) -> str:
    """Copy a cached explainer into ``weights/`` in fp16 (maintainers' tool); returns its file name (``-warm``
    for a fit warm-started from the profile's prior)."""
    settings = explainer_settings(profile, pooling, training, layer, seed, exact, schedule_factor=schedule_factor,
                                  dataset=dataset, pixel_loss=pixel_loss, warm=warm)
    suffix = (("" if schedule_factor == 1 else f"-x{schedule_factor}") + ("-inverter" if pixel_loss else "")
              + ("-warm" if "prior" in settings else ""))
    arch = "face_vgg16" if dataset == "celeba" else "smallcnn"
    name = f"{dataset}-{arch}-{pooling}-{training}-seed{seed}-interpretgan-{layer}{suffix}.safetensors"
    return _ship("explainers", settings, "explainer.safetensors", name, "explainer", torch.float16)


# ----------------------------------------------------------------------------------------------
# The panel of independent judges of explanations
# ----------------------------------------------------------------------------------------------

#: The panel of independent judges of explanations (:func:`judges`): three architectures other than the
#: paper's SmallCNN, one of them also trained adversarially (robust models read shapes, not textures).
JUDGES = ("lenet", "mlp", "resnet", "robust")
_JUDGE_ARCH = {"lenet": "lenet", "mlp": "mlp", "resnet": "resnet", "robust": "resnet"}
_JUDGE_LR = {"mlp": 0.05}  # natural training's initial rate where 0.01 is too slow (MLP: 96.1% after 5 epochs)


#: CelebA's panel: the MNIST panel's architectures on faces, for gender (the MLP with 256 hidden units), one of them,
#: ``robust``, trained with ATTA-1 + TRADES at the attack's eps (2/255).
FACE_JUDGES = ("resnet", "lenet", "mlp", "robust")
_FACE_JUDGE_SEED = {"resnet": 11, "lenet": 12, "mlp": 13, "robust": 14}


def judge_settings(profile: str = "default", name: str = "lenet", exact: bool | None = None,
                   dataset: str = "mnist", data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Settings of the judge ``name`` (one of :data:`JUDGES`): its architecture
    (:data:`~interpretgan.models.JUDGE_ARCHS`), its own seed, the profile's training images; natural training
    for 5 epochs of SGD 0.01 (MLP 0.05), x0.1 after epoch 3 (1 epoch at the smoke profile), or for ``robust``
    ATTA-1 + TRADES on the profile's MNIST schedule (the same as the pooling study's). For ``dataset``
    "celeba" (judges :data:`FACE_JUDGES`): each architecture on faces of the profile's size, trained for gender on
    the CelebA model's schedule (Adam, flips) with its own seed; ``robust``, the residual network trained with
    ATTA-1 + TRADES on the profile's face schedule (``celeba.judge_atta``: eps 2/255, SGD, crops and flips)."""
    p = get_profile(profile)
    if dataset == "celeba":
        if name not in FACE_JUDGES:
            raise ValueError(f"judge for celeba must be one of {list(FACE_JUDGES)}, got {name!r}")
        f = p.celeba
        model = {"arch": _JUDGE_ARCH[name], "in_channels": 3, "num_classes": 2, "image_size": f.image_size}
        if name in ("lenet", "mlp") and f.image_size >= 64:  # faces read at 32 px: shipped fp16 files under 2 MiB
            model["downsample"] = f.image_size // 32
        if name == "mlp":
            model["hidden"] = 256
        common = {"kind": "judge", "version": 2, "name": name, "dataset": "celeba", "arch": _JUDGE_ARCH[name],
                  "model": model, "seed": _FACE_JUDGE_SEED[name], "n_train": f.n_train, "n_train_seed": 0,
                  "exact": fast.resolve_exact(exact), **celeba_data_tag(data_root)}
        if name == "robust":
            sched = f.judge_atta
            return {**common, "training": "atta",
                    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sched.as_dict().items()
                       if k != "n_train"}}
        return {**common, "training": "natural", "epochs": f.epochs, "lr": f.lr, "lr_milestones": list(f.lr_milestones),
                "lr_gamma": f.lr_gamma, "optimizer": f.optimizer, "momentum": 0.9, "weight_decay": f.weight_decay,
                "batch_size": f.batch_size, "flip": f.flip}
    if name not in JUDGES:
        raise ValueError(f"judge must be one of {list(JUDGES)}, got {name!r}")
    common = {"kind": "judge", "version": 2, "name": name, "dataset": "mnist", "arch": _JUDGE_ARCH[name],
              "seed": 1 + JUDGES.index(name), "n_train_seed": 1, "exact": fast.resolve_exact(exact)}
    if name == "robust":
        sched = p.atta["mnist"]
        return {**common, "training": "atta",
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sched.as_dict().items()}}
    return {**common, "training": "natural", "n_train": p.n_train, "epochs": 1 if p.name == "smoke" else 5,
            "lr": _JUDGE_LR.get(name, 0.01), "lr_milestones": [3], "lr_gamma": 0.1, "momentum": 0.9,
            "weight_decay": 0.0, "batch_size": 128}


def judge(profile: str = "default", *, name: str = "lenet", data_root: str | None = None,
          device: str | torch.device | None = None, progress: bool = True, exact: bool | None = None,
          retrain: bool = False, dataset: str = "mnist") -> tuple[nn.Module, dict[str, Any]]:
    """The independent judge ``name`` (one of :data:`JUDGES`), trained once and cached (or shipped); returns
    ``(model, info)`` like :func:`classifier` (info: ``key``, ``settings``, ``source``, ``history``,
    ``test_accuracy`` on the profile's test images, and for the robust judge ``robust_accuracy``: PGD-40 at
    its training epsilon on the schedule's evaluation digits, from its training history)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = judge_settings(profile, name, exact, dataset, data_root)
    model = _judge_model(settings, device)
    test = test_set(profile, settings, data_root)
    info = _trained(model, "judges", settings, test, data_root, device, progress, retrain)
    if name == "robust":
        info["robust_accuracy"] = info["history"]["robust_accuracy"][-1]
    return model, info


def _judge_model(settings: dict[str, Any], device: torch.device) -> nn.Module:
    """A fresh judge (or attribute reader) of ``settings``' architecture on ``device``, seeded by its own seed."""
    set_seed(settings["seed"])
    kwargs = {k: v for k, v in settings.get("model", {}).items() if k != "arch"}
    if settings["arch"] == "resnet":
        kwargs.pop("image_size", None)  # global average pooling: any size
    return JUDGE_ARCHS[settings["arch"]](**kwargs).to(device)


def judges(profile: str = "default", *, data_root: str | None = None, device: str | torch.device | None = None,
           progress: bool = True, exact: bool | None = None, names: tuple[str, ...] | None = None,
           dataset: str = "mnist") -> dict:
    """The panel: ``{name: (model, info)}`` for every judge in ``names`` (default: :data:`JUDGES`, for CelebA
    :data:`FACE_JUDGES`; see :func:`judge`)."""
    names = names or (FACE_JUDGES if dataset == "celeba" else JUDGES)
    return {name: judge(profile, name=name, data_root=data_root, device=device, progress=progress, exact=exact,
                        dataset=dataset) for name in names}


# ----------------------------------------------------------------------------------------------
# Attribute readers: does an explanation keep the glasses, the hat, the smile? (Figure 4, measured)
# ----------------------------------------------------------------------------------------------

#: The CelebA attributes read by :func:`attribute_reader`: two occluders the paper's Figure 4 shows being dropped
#: (glasses, a hat) and one feature it does not discuss (a smile).
FACE_ATTRIBUTES = ("Eyeglasses", "Wearing_Hat", "Smiling")


def attribute_reader_settings(profile: str = "default", attribute: str = "Eyeglasses", exact: bool | None = None,
                              data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Settings of the reader of ``attribute`` (one of :data:`FACE_ATTRIBUTES`): the face panel's residual network
    (:class:`~interpretgan.models.JudgeResNet`) on faces of the profile's size, trained on the CelebA model's
    natural schedule (Adam, flips) with its own seed, on the training faces labelled by the attribute with the
    rarer class repeated until both are as many (:func:`~interpretgan.data.attribute_labels`)."""
    if attribute not in FACE_ATTRIBUTES:
        raise ValueError(f"attribute must be one of {list(FACE_ATTRIBUTES)}, got {attribute!r}")
    f = get_profile(profile).celeba
    return {"kind": "reader", "version": 1, "attribute": attribute, "dataset": "celeba", "arch": "resnet",
            "model": {"arch": "resnet", "in_channels": 3, "num_classes": 2}, "image_size": f.image_size,
            "seed": 21 + FACE_ATTRIBUTES.index(attribute), "n_train": f.n_train, "n_train_seed": 0, "balanced": True,
            "training": "natural", "epochs": f.epochs, "lr": f.lr, "lr_milestones": list(f.lr_milestones),
            "lr_gamma": f.lr_gamma, "optimizer": f.optimizer, "momentum": 0.9, "weight_decay": f.weight_decay,
            "batch_size": f.batch_size, "flip": f.flip, "exact": fast.resolve_exact(exact),
            **celeba_data_tag(data_root)}


def attribute_reader(profile: str = "default", *, attribute: str = "Eyeglasses", data_root: str | None = None,
                     device: str | torch.device | None = None, progress: bool = True, exact: bool | None = None,
                     retrain: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The reader of ``attribute`` on faces (see :func:`attribute_reader_settings`), trained once and cached (or
    shipped); returns ``(model, info)`` like :func:`judge`: label 1 means "has the attribute", and ``test_accuracy``
    and ``balanced_accuracy`` are measured on the profile's test faces labelled by the attribute."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = attribute_reader_settings(profile, attribute, exact, data_root)
    model = _judge_model(settings, device)
    test = attribute_labels(test_set(profile, settings, data_root), attribute)
    return model, _trained(model, "readers", settings, test, data_root, device, progress, retrain)


def ship_attribute_reader(profile: str = "default", attribute: str = "Eyeglasses", exact: bool | None = None) -> str:
    """Copy a cached attribute reader into ``weights/`` in fp16 (maintainers' tool); returns its file name."""
    return _ship("readers", attribute_reader_settings(profile, attribute, exact), "model.safetensors",
                 f"celeba-reader-{attribute.lower().replace('_', '-')}.safetensors", "attribute_reader",
                 torch.float16, with_accuracy=True)


def ship_judge(profile: str = "default", name: str = "lenet", exact: bool | None = None, dataset: str = "mnist") -> str:
    """Copy a cached judge into ``weights/`` in fp16 (maintainers' tool); returns its file name."""
    return _ship("judges", judge_settings(profile, name, exact, dataset), "model.safetensors",
                 f"{dataset}-judge-{name}.safetensors", "judge", torch.float16, with_accuracy=True)


# ----------------------------------------------------------------------------------------------
# Maintainers' command line: train classifiers through the cache and ship them
# ----------------------------------------------------------------------------------------------

def train_and_ship(spec: str, profile: str = "default", dtype: torch.dtype | None = torch.float16,
                   data_root: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or find in the cache) the classifier ``spec`` = ``dataset:arch:pooling:training:seed`` (e.g.
    ``cifar10:vgg16:avg:atta:1``; MNIST's arch is ``smallcnn``) and ship it into ``weights/`` with its history,
    test accuracy and where it trained (CPU or GPU, the fast path's precision, threads, minutes of training).
    Returns the info of :func:`classifier` plus ``shipped`` (the file name) and ``minutes`` (this call's)."""
    import time

    t0 = time.perf_counter()
    _, info = classifier(profile, data_root=data_root, progress=progress, ship_stages=True, **parse_spec(spec))
    if info["source"] == "shipped":
        return {**info, "shipped": None, "minutes": (time.perf_counter() - t0) / 60}
    trained_on = None
    if info["source"] == "trained":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        where = fast.where_it_ran(device, info["settings"]["exact"], torch.get_num_threads())
        trained_on = trained_on_text(training_segments(info["history"], info["resumed_segments"], where))
    name = ship_classifier(profile, dtype=dtype, trained_on=trained_on, **parse_spec(spec))
    cache.unship_stage(info["key"])
    return {**info, "shipped": name, "minutes": (time.perf_counter() - t0) / 60}


def parse_spec(spec: str) -> dict[str, Any]:
    """``dataset:arch:pooling:training:seed`` (e.g. ``cifar10:vgg16:avg:atta:1``; MNIST's arch is ``smallcnn``) as
    :func:`classifier`'s keywords."""
    parts = spec.split(":")
    if len(parts) != 5:
        raise ValueError(f"a model is dataset:arch:pooling:training:seed, e.g. cifar10:vgg16:avg:atta:1; got {spec!r}")
    dataset, arch, pooling, training, seed = parts
    return {"dataset": dataset, "arch": None if arch == "smallcnn" else arch, "pooling": pooling,
            "training": training, "seed": int(seed)}


def ship_training_stage(spec: str, profile: str = "default", data_root: str | None = None) -> str:
    """Ship the artifact cache's checkpoint of the ATTA training ``spec`` (see :func:`parse_spec`) as its training
    stage in ``weights/`` (maintainers' tool, for a run started without ``ship_stages``); the checkpoint's
    epoch must end a buffer-reset period. Its epochs count as trained on this machine (after those of a shipped
    stage it resumed from). Returns the stage's file name."""
    kw = parse_spec(spec)
    settings = classifier_settings(profile, exact=None, data_root=data_root, **kw)
    key = cache.settings_key(settings)
    checkpoint = cache.entry_folder("classifiers", settings) / "checkpoint.pt"
    state = cache.read_checkpoint(checkpoint)
    if state is None:
        raise FileNotFoundError(f"no training checkpoint of {spec} in {checkpoint.parent}")
    epoch, every = state["epoch"], settings.get("reset_every")
    if not at_buffer_reset(epoch, every) or epoch >= settings["epochs"]:
        raise ValueError(f"{spec}'s checkpoint is at epoch {epoch}: a stage is taken after an epoch that ends a "
                         f"buffer-reset period (every {every}) before the last ({settings['epochs']})")
    found = cache.shipped_stage(key)
    prior = found[1].get("segments", []) if found and found[1]["epoch"] < epoch else []
    where = fast.where_it_ran(torch.device("cpu"), settings["exact"], torch.get_num_threads())
    name = stage_name(settings, profile)
    cache.ship_stage(state, name, key, {"epoch": epoch, "epochs": settings["epochs"],
                                        "segments": training_segments(state["history"], prior, where)})
    return name


def main(argv: list[str] | None = None) -> int:
    """``python -m interpretgan.zoo cifar10:vgg16:avg:atta:1 ...``: train each classifier through the artifact cache
    (resuming an interrupted run) and ship it into ``weights/`` as soon as it is done (maintainers' tool: Table 3's
    models train one per core side by side, ``OMP_NUM_THREADS=1 taskset -c <core> python -m interpretgan.zoo ...``)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("models", nargs="+", metavar="dataset:arch:pooling:training:seed")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--fp32", action="store_true", help="ship fp32 weights (default: fp16, half the size)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--ship-stage", action="store_true",
                    help="train nothing: ship each model's artifact checkpoint (at a buffer reset) as its training "
                         "stage in weights/, for a run started without stages")
    args = ap.parse_args(argv)
    if args.ship_stage:
        for spec in args.models:
            print(f"{spec}: training stage shipped as weights/{ship_training_stage(spec, args.profile, args.data_root)}",
                  flush=True)
        return 0
    for spec in args.models:
        try:
            out = train_and_ship(spec, args.profile, None if args.fp32 else torch.float16, args.data_root)
        except FloatingPointError as err:
            raise SystemExit(f"{spec}: training diverged ({err}); a gentler start (the profile's cifar_schedule: "
                             "warmup_epochs, lr) is a change of recipe for every seed of that architecture") from err
        h = out["history"]
        check = f", last robustness check {h['robust_accuracy'][-1]:.2%}" if h.get("robust_accuracy") else ""
        print(f"{spec}: {out['source']}, test accuracy {out['test_accuracy']:.2%}{check}, {out['minutes']:.1f} min; "
              + (f"shipped as weights/{out['shipped']}" if out["shipped"] else "already shipped"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
