"""Layers fitted in parallel (issue 31 item 4): ``torchrun -m interpretgan.diagnose`` with 2 CPU processes (gloo)
gives the explainers a one-process fit of the same layers gives; layers dealt by cost; a seed per layer."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interpretgan import diagnosis, gan, paths

MODEL = '''from torch import nn


def net():
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(200, 10))
'''
ARGS = ["--profile", "smoke", "--dataset", "mnist", "--image-size", "28", "--layers", "2,5,7", "--n-images", "64",
        "--attack", "fgsm", "--epsilon", "0.3", "--no-judges", "--exact"]


def test_assign_layers_balances_by_cost_deterministically():
    costs = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}
    assert diagnosis.assign_layers(costs, 2) == [["a", "d"], ["b", "c", "e"]]  # 8 against 8
    assert diagnosis.assign_layers(costs, 1) == [list(costs)]
    assert diagnosis.assign_layers({"a": 1.0}, 3) == [["a"], [], []]


def test_layer_seed_depends_on_the_layer_and_the_run_seed_only():
    assert diagnosis.layer_seed(0, "conv1") == diagnosis.layer_seed(0, "conv1")
    assert len({diagnosis.layer_seed(s, l) for s in (0, 1) for l in ("conv1", "conv2", "fc")}) == 6


def test_layer_costs_count_each_layers_work_and_leave_the_random_stream_alone():
    from torch import nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 28 * 28, 10)).eval()
    settings = gan.GANSettings(code_dim=8, channels=(8, 8, 8), batch_size=2, images=(2, 2, 2), base=7)
    example = torch.rand(2, 1, 28, 28)
    before = torch.get_rng_state()
    costs = diagnosis.layer_costs(model, ["1", "3"], settings, example)
    assert torch.equal(torch.get_rng_state(), before)
    # layer "1" (32 x 28 x 28) needs convolutional stages in C, the logits one linear layer: the first costs more
    assert costs["1"] > costs["3"] > 0


def test_two_processes_fit_the_explainers_one_process_fits(tmp_path, monkeypatch):
    (tmp_path / "net.py").write_text(MODEL)
    spec = f"{tmp_path / 'net.py'}:net"
    env = {**os.environ, "INTERPRETGAN_ARTIFACTS": str(tmp_path / "two"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "interpretgan.diagnose", "--model", spec, *ARGS], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 layers on 2 process(es)" in done.stdout
    two = next((tmp_path / "two" / "user").iterdir())

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "one"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = diagnosis.prepare_user_model(spec, None, "mnist", 28, ["2", "5", "7"], "fgsm", 0.3, 64, "smoke",
                                           exact=True)
        assert run.folder.name == two.name  # the same key: the same model, data, settings and seed
        run.folder.mkdir(parents=True)
        diagnosis.fit_layers(run.model, run.layers, run.train, run.settings, run.folder, progress=False, exact=True)
    finally:
        torch.set_num_threads(threads)
    assert run.folder.parent == Path(paths.artifacts_root()) / "user" and len(run.layers) == 3
    for layer in run.layers:
        a, b = load_file(run.folder / f"{layer}.safetensors"), load_file(two / f"{layer}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{layer} {k}")
    assert (two / "diagnosis.csv").read_text().splitlines()[0] == ",acc,acc_low,acc_high,vul,vul_low,vul_high"


def test_fit_layers_in_several_processes_needs_a_shared_folder():
    with pytest.raises(ValueError, match="needs a folder they share"):
        diagnosis.fit_layers(torch.nn.Linear(2, 2), ["x"], None, gan.GANSettings(), None, world=2)


def test_a_damaged_explainer_in_the_cache_is_moved_aside_and_refitted(tmp_path):
    from torch import nn

    from interpretgan.data import ImageSet
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)).eval()
    data = ImageSet(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (32,)),
                    torch.arange(32))
    settings = gan.GANSettings(code_dim=8, channels=(8, 8, 8), batch_size=8, images=(8, 8, 16), base=7, ema=0.9)
    first = diagnosis.fit_layers(model, ["1"], data, settings, tmp_path, progress=False, exact=True)
    good = {k: v.clone() for k, v in load_file(tmp_path / "1.safetensors").items()}  # not the mapped file
    (tmp_path / "1.safetensors").write_bytes(b"\x80\x04not weights")  # a pickle where the weights were
    (tmp_path / "1.checkpoint.pt").unlink()
    with pytest.warns(Warning, match="1.safetensors"):
        again = diagnosis.fit_layers(model, ["1"], data, settings, tmp_path, progress=False, exact=True)
    assert (tmp_path / "1.safetensors.refused").is_file()
    for k, v in load_file(tmp_path / "1.safetensors").items():  # refitted with the layer's own seed: the same
        torch.testing.assert_close(v, good[k])
    x = data.take(slice(0, 4)).tensors()[0]
    torch.testing.assert_close(again["1"](x, exact=True), first["1"](x, exact=True))
