"""``interpretgan.table3``: Table 3's records beside the shipped weights and the tables made from them."""
import pytest
import torch

from interpretgan import table3


def _record(acc: dict, transfer: float | None = None) -> dict:
    masking = {"n_images": 1_000, "apgd_steps": 100, "pgd20": acc["pgd20"] + 0.01, "apgd_ce": acc["pgd20"] - 0.01,
               "apgd_dlr": acc["pgd20"] - 0.04}
    if transfer is not None:
        masking.update(transfer=transfer, worst_case=acc["pgd20"] - 0.05)
    return {"test_images": 10_000, "data": "cifar10-jpeg", "eps": 0.031, "accuracy": acc, "masking": masking,
            "minutes": {"attacks": 20.0, "apgd": 2.0}, "evaluated_on": "a CPU, bf16 autocast, 1 thread"}


def _entry(name: str, record: dict | None = None, **extra) -> dict:
    """A manifest entry as ``cache.ship`` writes it (the settings behind the file name) with ``record``."""
    _, arch, pooling, _, seed = name.removesuffix(".safetensors").removesuffix("-smoke").split("-")
    settings = {"dataset": name.split("-")[0], "arch": arch, "pooling": pooling, "training": "atta",
                "seed": int(seed.removeprefix("seed"))}
    return {"settings": settings, **({"table3": record} if record else {}), **extra}


def _acc(clean, pgd20, pgd100, mpgd20, fgsm):
    return {"clean": clean, "pgd20": pgd20, "pgd100": pgd100, "mpgd20": mpgd20, "fgsm": fgsm}


_MADE = [
    # vgg16, three seed pairs: avg ahead by 2 points under PGD-20 in every pair, seed std 1 point
    ("cifar10-vgg16-max-atta-seed0.safetensors", _record(_acc(.70, .40, .39, .41, .44), .52), {"trained_on": "X, 120 min"}),
    ("cifar10-vgg16-max-atta-seed1.safetensors", _record(_acc(.71, .41, .40, .42, .45), .53), {}),
    ("cifar10-vgg16-max-atta-seed2.safetensors", _record(_acc(.72, .42, .41, .43, .46), .54), {}),
    ("cifar10-vgg16-avg-atta-seed0.safetensors", _record(_acc(.71, .42, .40, .42, .44), .51), {}),
    ("cifar10-vgg16-avg-atta-seed1.safetensors", _record(_acc(.72, .43, .41, .43, .45), .52), {}),
    ("cifar10-vgg16-avg-atta-seed2.safetensors", _record(_acc(.73, .44, .42, .44, .46), .53), {}),
    # wrn: one model only; a smoke-profile file, one without a record and an MNIST file are left out
    ("cifar10-wrn-max-atta-seed0.safetensors", _record(_acc(.60, .30, .29, .31, .35)), {}),
    ("cifar10-wrn-avg-atta-seed0.safetensors", None, {}),
    ("cifar10-wrn-avg-atta-seed0-smoke.safetensors", _record(_acc(.1, .1, .1, .1, .1)), {}),
    ("mnist-smallcnn-avg-atta-seed0.safetensors", _record(_acc(.1, .1, .1, .1, .1)), {}),
]
HAND_MADE = {"files": {name: _entry(name, rec, **extra) for name, rec, extra in _MADE}}


def test_summary_of_hand_made_records_gives_known_means_spreads_and_gaps():
    """Known answers: means and seed std (ddof 1) in percent beside the paper's, avg - max per seed pair, the verdict
    against the seed spread, a single model shown without a spread, other profiles' and unrecorded files left out."""
    df = table3.records(HAND_MADE)
    assert len(df) == 7 and list(df["pooling"][:6]) == ["max"] * 3 + ["avg"] * 3  # max first, as the paper
    s = table3.summary(HAND_MADE)
    assert s["table"].loc[("vgg16", "max"), "pgd20"] == "41.00 ± 1.00 (46.97)"
    assert s["table"].loc[("vgg16", "avg"), "clean"] == "72.00 ± 1.00"
    assert s["table"].loc[("wrn", "max"), "pgd20"] == "30.00 (53.08)" and s["table"].loc[("wrn", "max"), "seeds"] == 1
    assert s["gaps"].loc[("vgg16", 1), "pgd20"] == pytest.approx(2.0)
    assert s["gaps"].loc[("vgg16", 2), "fgsm"] == pytest.approx(0.0)
    assert len(s["gaps"]) == 3  # the wrn seed 0 pair lacks its avg record
    assert s["verdict"].loc[("vgg16", "pgd20"), "verdict"] == "avg > max, beyond the seed spread"
    assert s["verdict"].loc[("vgg16", "fgsm"), "verdict"].startswith("avg <= max here")
    assert ("wrn", "pgd20") not in s["verdict"].index
    assert s["masking"].loc[("vgg16", "avg", 0), "masking_transfer"] == pytest.approx(51.0)
    text = table3.markdown(HAND_MADE)
    assert "| vgg16 | max | 3 | 71.00 ± 1.00 | 41.00 ± 1.00 (46.97) |" in text
    assert "| vgg16 | 1 | +1.00 | +2.00 | +1.00 | +1.00 | +0.00 |" in text
    assert "| wrn | max | 0 | 1,000 | 31.0 | - | 29.0 | 26.0 | - |" in text  # transfer waits for its pair
    assert "- vgg16 pgd20: +2.00 points, avg > max, beyond the seed spread" in text
    assert "trained X, 120 min; evaluated in 22.0 min on a CPU, bf16 autocast, 1 thread" in text


def test_no_records_and_bad_specs_are_said_plainly():
    assert "No CIFAR-10 model has a Table 3 record yet" in table3.markdown({"files": {}})
    assert table3.parse_spec("wrn:avg:2") == ("wrn", "avg", 2)
    for bad in ("wrn:avg", "wrn:mean:0", "vgg16:max:one"):
        with pytest.raises(ValueError, match="arch:pooling:seed with pooling one of"):
            table3.parse_spec(bad)


def test_readme_block_is_what_the_records_give():
    """The README's Table 3 block is generated from the shipped records (``--write-readme`` after recording)."""
    text, new = table3.readme_with_table()
    assert new == text, "README's Table 3 block is stale: python -m interpretgan.table3 --write-readme"


def test_recording_shipped_models_measures_what_evaluate_and_transfer_give(tmp_path, monkeypatch):
    """At the smoke profile on 40 test images: a shipped model's record equals an uncached evaluation of the same
    images (the same random starts), its masking figures the per-image flags at the masking positions, the pair's
    transfer the other model's PGD-20 images scored by hand and the worst case no higher than any attack; the
    record lands in the manifest entry; an unshipped model is refused with the command that trains it."""
    from interpretgan import cache, zoo
    from interpretgan.attacks import batch_size_for
    from interpretgan.profiles import get_profile
    from interpretgan.robustness import evaluate, masking_positions, transfer

    monkeypatch.setenv("INTERPRETGAN_WEIGHTS", str(tmp_path))
    for pool in ("max", "avg"):
        zoo.classifier("smoke", pooling=pool, training="atta", seed=0, dataset="cifar10", arch="vgg16", progress=False)
        zoo.ship_classifier("smoke", pool, "atta", 0, dataset="cifar10", arch="vgg16")
    with pytest.raises(FileNotFoundError, match="python -m interpretgan.zoo cifar10:vgg16:max:atta:1"):
        table3.record_model("vgg16", "max", 1, "smoke", n_test=40, progress=False)
    rec = table3.record_model("vgg16", "max", 0, "smoke", n_test=40, progress=False)
    with pytest.raises(ValueError, match=r"no Table 3 record yet for \['avg'\]"):
        table3.record_pair("vgg16", 0, "smoke", n_test=40, progress=False)
    table3.record_model("vgg16", "avg", 0, "smoke", n_test=40, progress=False)
    pair = table3.record_pair("vgg16", 0, "smoke", n_test=40, progress=False)

    model, info, name = table3._model("vgg16", "max", 0, "smoke", None, None)
    split = table3._test_split(None, 40)
    ev = evaluate(model, split, list(table3.ATTACKS), table3.EPS, dataset="cifar10", keep=["pgd20"],
                  exact=info["settings"]["exact"], progress=False,
                  batch_size=batch_size_for(None, torch.device("cpu"), split))
    assert rec["accuracy"] == {"clean": round(ev.clean, 4), **{a: round(ev.robust[a], 4) for a in table3.ATTACKS}}
    assert rec["test_images"] == 40 and set(rec["index_change"]) == {f"block{i}.{j}" for i, j in
                                                                       ((1, 6), (2, 6), (3, 9), (4, 9), (5, 9))}
    at = masking_positions(40, get_profile("smoke").n_apgd)
    assert rec["masking"]["n_images"] == 40 and rec["masking"]["pgd20"] == round(ev.correct["pgd20"][at].float().mean().item(), 4)
    other, other_info, _ = table3._model("vgg16", "avg", 0, "smoke", None, None)
    ev_avg = table3._full_evaluation(other, other_info, split, progress=False)  # its cache entry: the same images
    moved = transfer(model, ev_avg.adversarial["pgd20"][at], split.labels[at], exact=info["settings"]["exact"])
    got = pair["max"]["masking"]
    assert got["transfer"] == round(moved.float().mean().item(), 4)
    assert got["worst_case"] <= min(got["transfer"], got["pgd20"], got["apgd_ce"], got["apgd_dlr"])
    assert cache.read_manifest()["files"][name]["table3"]["masking"]["transfer"] == got["transfer"]
    with pytest.raises(KeyError, match="nothing.safetensors is not in"):
        cache.annotate_shipped("nothing.safetensors", {"table3": {}})
    assert "index_change" not in pair["avg"]  # average pooling has no argmax to move
    assert len(table3.records(profile="smoke")) == 2 and table3.records().empty
