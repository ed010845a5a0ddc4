"""The pooling study's evaluation: shared PGD runs, APGD parity with torchattacks, transfer, seed summaries."""
import time

import pandas as pd
import pytest
import torch

from interpretgan.attacks import MPGD, PGD, run_attack
from interpretgan.robustness import apgd, compare_poolings, evaluate, seed_summary, transfer


def test_pgd40_is_the_40th_iterate_of_pgd100(weak_model, test_set):
    x, y = test_set.subset(32).tensors()
    torch.manual_seed(3)
    alone = PGD(0.3, 0.01, 40, exact=True)(weak_model, x, y)
    torch.manual_seed(3)
    its = PGD(0.3, 0.01, 100, exact=True).iterates(weak_model, x, y, (40, 100))
    torch.testing.assert_close(its[40], alone, rtol=0, atol=0)
    assert not torch.equal(its[40], its[100])
    with pytest.raises(ValueError, match="1..100"):
        PGD(0.3, 0.01, 100).iterates(weak_model, x, y, (101,))


def test_evaluate_equals_separate_runs(weak_model, test_set):
    s = test_set.subset(300)
    ev = evaluate(weak_model, s, ["pgd5", "pgd10"], eps=0.1, exact=True, seed=4, batch_size=128, progress=False,
                  keep=["pgd10"])
    for k in (5, 10):
        torch.manual_seed(4)
        ref = run_attack(weak_model, PGD(0.1, 0.01, k, exact=True), s, batch_size=128, progress=False)
        assert ev.robust[f"pgd{k}"] == ref.robust_accuracy
        assert torch.equal(ev.correct[f"pgd{k}"], ref.pred_adv == ref.labels)
    assert ev.clean == ref.clean_accuracy and ev.robust["pgd10"] <= ev.robust["pgd5"] + 0.01
    assert ev.adversarial["pgd10"].shape == (300, 1, 32, 32)
    torch.manual_seed(4)
    mp = evaluate(weak_model, s, ["mpgd10"], eps=0.1, exact=True, seed=4, batch_size=128, progress=False)
    torch.manual_seed(4)
    assert mp.robust["mpgd10"] == run_attack(weak_model, MPGD(0.1, 0.01, 10, exact=True), s, batch_size=128,
                                             progress=False).robust_accuracy
    # crafted on the model itself, "transfer" scores exactly its white-box robustness
    assert torch.equal(transfer(weak_model, ev.adversarial["pgd10"], s.labels, exact=True), ev.correct["pgd10"])
    with pytest.raises(ValueError, match="pgd<k>"):
        evaluate(weak_model, s, ["pgd"], eps=0.1)


def test_apgd_is_torchattacks_apgd(weak_model, test_set):
    import torchattacks

    s = test_set.subset(100)
    ours = apgd(weak_model, s, eps=0.1, loss="dlr", steps=10, exact=True, progress=False)
    x, y = s.tensors()
    ref = torchattacks.APGD(weak_model, norm="Linf", eps=0.1, steps=10, n_restarts=1, seed=0, loss="dlr")(x, y)
    assert torch.equal(ours, weak_model(ref).argmax(1) == y)
    ce = apgd(weak_model, s, eps=0.1, loss="ce", steps=10, exact=True, progress=False)
    pgd = evaluate(weak_model, s, ["pgd10"], eps=0.1, exact=True, progress=False).robust["pgd10"]
    assert ce.float().mean().item() <= pgd + 0.03  # APGD is at least about as strong as PGD of equal steps


def test_seed_summary_and_pooling_comparison_by_hand():
    rows = [("max", 0, "pgd40", 0.80), ("max", 1, "pgd40", 0.84), ("max", 2, "pgd40", 0.82),
            ("avg", 0, "pgd40", 0.90), ("avg", 1, "pgd40", 0.88), ("avg", 2, "pgd40", 0.92),
            ("max", 0, "fgsm", 0.90), ("max", 1, "fgsm", 0.90), ("max", 2, "fgsm", 0.96),
            ("avg", 0, "fgsm", 0.91), ("avg", 1, "fgsm", 0.92), ("avg", 2, "fgsm", 0.93)]
    df = pd.DataFrame(rows, columns=["pooling", "seed", "attack", "accuracy"])
    summary = seed_summary(df)
    assert summary.loc[("max", "pgd40"), "mean"] == pytest.approx(82.0)
    assert summary.loc[("max", "pgd40"), "std"] == pytest.approx(2.0)
    assert summary.loc[("avg", "fgsm"), ["min", "max", "seeds"]].tolist() == pytest.approx([91, 93, 3])
    cmp = compare_poolings(summary, ["pgd40", "fgsm"])
    assert cmp.loc["pgd40", "avg - max"] == pytest.approx(8.0)
    assert cmp.loc["pgd40", "verdict"] == "avg > max, beyond the seed spread"
    assert cmp.loc["fgsm", "avg - max"] == pytest.approx(0.0, abs=1e-9)
    assert cmp.loc["fgsm", "verdict"].startswith("avg <= max here")


def test_trimmed_evaluation_puts_clean_and_full_attacks_on_every_image(weak_model, test_set, tmp_path, monkeypatch):
    """Table 3 at the default profile: clean and FGSM on the whole split, the iterative attacks on a subset; the
    per-image flags follow the subset throughout (so the masking checks line up), each figure with its count."""
    from interpretgan.attacks import FGSM
    from interpretgan.robustness import _evaluate_trimmed

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))
    split = test_set.subset(200, seed=5)
    split = type(split)(split.images, split.labels, torch.arange(200), "split")  # positions = indices, as a split
    sub = split.subset(40)
    info = {"key": "weak", "settings": {"dataset": "mnist", "exact": True}}
    ev = _evaluate_trimmed(weak_model, info, split, sub, ("pgd5", "fgsm"), ("fgsm",), {}, 0.1, keep=("fgsm",),
                           progress=False)
    assert ev.n_images == {"clean": 200, "fgsm": 200, "pgd5": 40}
    whole = run_attack(weak_model, FGSM(0.1, exact=True), split, progress=False)
    assert ev.clean == whole.clean_accuracy and ev.robust["fgsm"] == whole.robust_accuracy
    on_sub = run_attack(weak_model, FGSM(0.1, exact=True), sub, progress=False)
    assert torch.equal(ev.correct["fgsm"], on_sub.pred_adv == on_sub.labels)
    assert torch.equal(ev.correct["clean"], on_sub.pred_clean == on_sub.labels)
    assert len(ev.correct["pgd5"]) == 40 and ev.adversarial["fgsm"].shape == (40, 1, 32, 32)


def test_fewer_images_for_one_attack_lie_inside_the_subset_and_line_up(weak_model, test_set, tmp_path, monkeypatch):
    """The default profile's PGD-100 on 250 of Table 3's 1,000: an attack in ``fewer`` runs on a fixed random part of
    the subset (the same images as attacking that part alone), its count in ``n_images``, its positions kept, and
    ``correct_at`` gives its flags at the masking checks' positions (a smaller draw of the same seed lies inside it)
    and refuses positions it never attacked."""
    from interpretgan.attacks import batch_size_for
    from interpretgan.data import random_positions
    from interpretgan.robustness import _evaluate_trimmed, evaluate, masking_positions

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))
    split = test_set.subset(200, seed=5)
    split = type(split)(split.images, split.labels, torch.arange(200), "split")
    sub = split.subset(60)
    info = {"key": "weak", "settings": {"dataset": "mnist", "exact": True}}
    ev = _evaluate_trimmed(weak_model, info, split, sub, ("pgd5", "pgd3", "fgsm"), ("fgsm",), {"pgd5": 24}, 0.1,
                           keep=(), progress=False)
    assert ev.n_images == {"clean": 200, "fgsm": 200, "pgd3": 60, "pgd5": 24}
    pos = ev.positions["pgd5"]
    assert pos.tolist() == random_positions(60, 24).tolist() and len(ev.correct["pgd5"]) == 24
    part = sub.take(pos)
    alone = evaluate(weak_model, part, ["pgd5"], 0.1, dataset="mnist", exact=True, progress=False,
                     batch_size=batch_size_for(None, torch.device("cpu"), part))  # uncached, the same random starts
    assert torch.equal(ev.correct["pgd5"], alone.correct["pgd5"]) and ev.robust["pgd5"] == alone.robust["pgd5"]
    assert 0 < ev.robust["pgd5"] < 1
    at = masking_positions(60, 10)
    assert set(at.tolist()) <= set(pos.tolist())  # the masking checks' 10 lie inside PGD-5's 24
    assert torch.equal(ev.correct_at("pgd5", at), ev.correct["pgd5"][[pos.tolist().index(i) for i in at.tolist()]])
    assert torch.equal(ev.correct_at("pgd3", at), ev.correct["pgd3"][at])
    outside = torch.tensor(sorted(set(range(60)) - set(pos.tolist()))[:3])
    with pytest.raises(ValueError, match="pgd5 was run on 24 of the test images, which miss 3 of the 3"):
        ev.correct_at("pgd5", outside)
    with pytest.raises(ValueError, match="keep"):
        _evaluate_trimmed(weak_model, info, split, sub, ("pgd5", "fgsm"), ("fgsm",), {"pgd5": 24}, 0.1,
                          keep=("pgd5",), progress=False)


def test_study_images_follow_the_profile_or_the_override(test_set):
    """06's ``cifar_test``: the profile's trimmed CIFAR-10 evaluation (iterative attacks on a subset, the
    ``cifar_full`` attacks and clean accuracy on the whole split), "all" (every attack on every image), a count;
    the smoke profile trims nothing (no ``cifar_full``), MNIST never trims."""
    from interpretgan.profiles import get_profile
    from interpretgan.robustness import study_images

    split = type(test_set)(test_set.images[:300], test_set.labels[:300], torch.arange(300), "split")
    default, smoke = get_profile("default"), get_profile("smoke")
    test, full, fewer = study_images(default, "cifar10", split)
    assert len(test) == 300 and full is None and fewer == {}  # the profile's 1,000 covers this 300-image split
    big = type(test_set)(torch.zeros(3_000, 1, 1, 1, dtype=torch.uint8), torch.zeros(3_000, dtype=torch.long),
                         torch.arange(3_000), "big")
    test, full, fewer = study_images(default, "cifar10", big)
    assert len(test) == 1_000 and full == ("fgsm",) and fewer == {"pgd100": 250}  # the profile's trim
    assert test.indices.tolist() == big.subset(1_000).indices.tolist()  # the same fixed subset every time
    test, full, fewer = study_images(default, "cifar10", big, 120)
    assert len(test) == 120 and full == ("fgsm",) and fewer == {}  # a count asked for: every iterative attack on it
    test, full, fewer = study_images(default, "cifar10", split, "all")
    assert test is split and full is None and fewer == {}
    assert study_images(smoke, "cifar10", split)[1:] == (None, {}) and len(study_images(smoke, "cifar10", split)[0]) == 64
    assert study_images(default, "mnist", split, 50)[1:] == (None, {})
    with pytest.raises(ValueError, match="n_test"):
        study_images(default, "cifar10", split, 0)


def test_missing_study_models_names_what_would_train(tmp_path, monkeypatch):
    """06 runs its CIFAR-10 part by default only when nothing would train: the models neither cached nor shipped
    are named (from an empty artifact folder: all but the shipped ones)."""
    import re

    from interpretgan import cache, robustness

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path))
    every = {f"{a} {p} seed {k}" for a in ("vgg16", "wrn") for p in ("max", "avg") for k in (0, 1, 2)}
    shipped = {" ".join(m.groups()[:2]) + f" seed {m.group(3)}" for name in cache.read_manifest()["files"]
               if (m := re.match(r"cifar10-(vgg16|wrn)-(max|avg)-atta-seed(\d)\.safetensors$", name))}
    assert "vgg16 max seed 0" in shipped
    assert set(robustness.missing_study_models("default", "cifar10", ("vgg16", "wrn"))) == every - shipped
    assert robustness.missing_study_models("default", "mnist") == []  # MNIST's ATTA models all ship


def test_masking_checks_take_a_fixed_random_subset_not_the_first_images():
    """The CIFAR-10 copy's test split is stored in class order: its first 1,000 images are all airplanes (APGD on
    them read 52% against PGD-20's 41.8% over all 10,000). The masking checks take a fixed random subset instead."""
    from interpretgan.robustness import masking_positions

    labels = torch.arange(10).repeat_interleave(1000)  # a split in class order
    at = masking_positions(10_000, 1_000)
    assert torch.equal(at, masking_positions(10_000, 1_000)) and len(at.unique()) == 1_000
    assert torch.equal(at, at.sort().values)
    counts = torch.bincount(labels[at], minlength=10)
    assert counts.min() >= 70 and counts.max() <= 130  # every class, near its tenth
    assert torch.equal(masking_positions(500, 1_000), torch.arange(500))


class _Interrupted(Exception):
    pass


def _interrupt_after(model, calls: int):
    """A forward pre-hook on ``model`` that raises :class:`_Interrupted` at its ``calls + 1``-th forward pass."""
    seen = {"n": 0}

    def hook(module, inputs):
        seen["n"] += 1
        if seen["n"] > calls:
            raise _Interrupted

    return model.register_forward_pre_hook(hook), seen


def test_an_interrupted_evaluation_goes_on_to_what_an_uninterrupted_one_gives(weak_model, test_set, tmp_path):
    s = test_set.subset(200)
    kw = dict(eps=0.1, exact=True, seed=2, batch_size=50, progress=False, keep=["pgd5"])
    attacks = ["pgd5", "mpgd5", "fgsm"]
    handle, seen = _interrupt_after(weak_model, 10 ** 9)  # count the forward passes of a whole run (4 batches)
    whole = evaluate(weak_model, s, attacks, **kw)
    handle.remove()
    per_batch = seen["n"] // 4
    partial = tmp_path / "evaluation.partial.pt"
    handle, _ = _interrupt_after(weak_model, 2 * per_batch + per_batch // 2)  # stops inside the third batch
    try:
        with pytest.raises(_Interrupted):
            evaluate(weak_model, s, attacks, resume=partial, save_every=0, **kw)
    finally:
        handle.remove()
    saved = torch.load(partial, weights_only=True)
    assert saved["batches"] == 2 and saved["seconds"] > 0
    torch.save({**saved, "seconds": 1000.0}, partial)  # as if the first process had run 1,000 s
    torch.manual_seed(123)  # whatever the global generator holds now, the run goes on from the saved state
    t0 = time.monotonic()
    again = evaluate(weak_model, s, attacks, resume=partial, save_every=0, **kw)
    assert 1000.0 < again.seconds <= 1000.0 + time.monotonic() - t0  # the earlier process's seconds counted
    assert 0 < whole.seconds < 1000.0
    for name in ["clean", *attacks]:
        assert torch.equal(again.correct[name], whole.correct[name]), name
    assert torch.equal(again.adversarial["pgd5"], whole.adversarial["pgd5"])
    assert again.robust == whole.robust and again.clean == whole.clean
    # a partial run made with other settings (another seed) is not taken up
    other = evaluate(weak_model, s, attacks, resume=partial, **{**kw, "seed": 5})
    assert torch.equal(other.correct["clean"], whole.correct["clean"])
    assert torch.equal(other.adversarial["pgd5"], evaluate(weak_model, s, attacks, **{**kw, "seed": 5}).adversarial["pgd5"])


def test_an_interrupted_apgd_goes_on_to_what_an_uninterrupted_one_gives(weak_model, test_set, tmp_path):
    s = test_set.subset(120)
    kw = dict(eps=0.1, loss="ce", steps=5, exact=True, batch_size=40, progress=False)
    handle, seen = _interrupt_after(weak_model, 10 ** 9)
    whole = apgd(weak_model, s, **kw)
    handle.remove()
    partial = tmp_path / "apgd.partial.pt"
    handle, _ = _interrupt_after(weak_model, seen["n"] // 3 + seen["n"] // 6)  # inside the second batch
    try:
        with pytest.raises(_Interrupted):
            apgd(weak_model, s, resume=partial, save_every=0, **kw)
    finally:
        handle.remove()
    assert torch.load(partial, weights_only=True)["batches"] == 1
    assert torch.equal(apgd(weak_model, s, resume=partial, save_every=0, **kw), whole)


def test_cached_apgd_records_its_seconds_with_those_of_an_interrupted_run(weak_model, test_set, monkeypatch):
    """Table 3's "evaluated in" minutes: the cache keeps what a run took, the earlier processes of an interrupted run
    included (a resumed record once counted only its last process), and gives it back with the result."""
    from interpretgan import cache, robustness
    from interpretgan.robustness import apgd_cached

    s = test_set.subset(80)
    info = {"key": "seconds-test", "settings": {"exact": True}}
    settings = {"kind": "apgd", "classifier": "seconds-test", "loss": "ce", "steps": 5, "eps": 0.1, "test": s.name,
                "n": len(s), "indices_sum": int(s.indices.sum()), "seed": 0, "exact": True}
    partial = cache.entry("evaluations", settings) / "apgd.partial.pt"
    monkeypatch.setattr(robustness, "apgd", lambda *a, **kw: torch.ones(len(s), dtype=torch.bool))
    cache.save_checkpoint({"seconds": 600.0}, partial)  # an earlier process's 10 minutes
    t0 = time.monotonic()
    correct, seconds = apgd_cached(weak_model, info, s, 0.1, "ce", steps=5, progress=False, timed=True)
    assert correct.all() and 600.0 <= seconds <= 600.0 + time.monotonic() - t0 and not partial.exists()
    again = apgd_cached(weak_model, info, s, 0.1, "ce", steps=5, progress=False, timed=True)
    assert again[1] == seconds and torch.equal(apgd_cached(weak_model, info, s, 0.1, "ce", steps=5), correct)
