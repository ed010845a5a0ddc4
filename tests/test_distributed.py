"""ATTA under DistributedDataParallel (gloo, 2 CPU processes) equals the single-process run."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from interpretgan.data import mnist32
from interpretgan.models import SmallCNN
from interpretgan.training import train_atta

N_TRAIN, BATCH = 320, 64  # 5 global steps per epoch


def _initial_model():
    """The dropout-free SmallCNN every run starts from (seeded: the same weights each call)."""
    torch.manual_seed(11)
    model = SmallCNN(dropout=0.0)
    torch.nn.init.normal_(model.fc3[0].weight, std=0.05)  # so the first steps already have input gradients
    return model


def _run(checkpoint, epochs=2):
    """Train a dropout-free SmallCNN with ATTA in exact fp32; returns the model and history."""
    tr, te = mnist32("train").subset(N_TRAIN, seed=3), mnist32("test").subset(64)
    model = _initial_model()
    hist = train_atta(model, tr, te, epochs=epochs, lr=0.02, eps=0.3, step_size=0.05, batch_size=BATCH, seed=4,
                      checkpoint=checkpoint, progress=False, exact=True)
    return model, hist


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, hist = _run(os.path.join(out_dir, "ddp.pt"))
        torch.save({"model": model.state_dict(), "history": hist}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    """Two DDP ranks follow the single-process trajectory up to rounding, and stay identical to each other.

    Not bit for bit: DDP averages the two halves' gradients (another summation order than one batch's mean),
    and ATTA's sign(gradient) steps amplify that rounding: a flipped sign moves a pixel of the perturbation
    by 2 x step. Measured on two CPUs: weights up to 1.6e-4 apart, 0.1-1.5% of each tensor's total update,
    1.6% of the buffer's pixels off. The bounds below are 3-5 times that; gradients summed instead of
    averaged would double every step (an offset as large as the update itself), and replicas out of sync
    fail the bit-for-bit check."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ref, ref_hist = _run(tmp_path / "single.pt")
    init = _initial_model().state_dict()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ref.state_dict().items():
        # the replicas are synchronised: the same all-reduced gradient, so the same weights, bit for bit
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
        if value.dtype.is_floating_point:
            update = (value - init[name]).norm()
            assert update > 0, name  # every tensor trained
            off = (ranks[0]["model"][name] - value).norm()
            assert off <= 0.05 * update, f"{name}: {off:.2e} off the single-process weights, update {update:.2e}"
    h = ranks[0]["history"]
    for key in ("train_loss", "perturbation"):
        assert h[key] == pytest.approx(ref_hist[key], rel=1e-3), key
    for key in ("train_robust_accuracy", "test_accuracy"):  # 320 training and 64 test digits
        assert h[key] == pytest.approx(ref_hist[key], abs=0.02), key
    # the checkpoint rank 0 wrote holds the whole buffer, gathered from both ranks, as one process has it
    ddp, single = (torch.load(tmp_path / f, weights_only=True) for f in ("ddp.pt", "single.pt"))
    assert ddp["buffer"].shape == single["buffer"].shape == (N_TRAIN, 1, 32, 32)
    assert single["buffer"].abs().amax(dim=(1, 2, 3)).min() > 0  # every digit's perturbation grew
    off = ((ddp["buffer"] - single["buffer"]).abs() > 1e-5).float().mean()
    assert off < 0.05, f"{off:.1%} of the buffer's pixels differ"


def test_torchrun_entry_point_trains_into_the_cache(tmp_path, monkeypatch):
    """``torchrun -m interpretgan.distributed`` at the smoke profile: rank 0 caches the model, which
    :func:`interpretgan.zoo.classifier` then loads. (An artifact folder of its own: in a cache that already
    holds the model, torchrun would load it rather than train.)"""
    from interpretgan.zoo import classifier

    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "interpretgan.distributed", "--profile", "smoke", "--pooling", "avg", "--seed", "5"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained:" in run.stdout and "2 processes" in run.stdout
    model, info = classifier(profile="smoke", pooling="avg", training="atta", seed=5, progress=False)
    assert info["source"] == "cache" and info["settings"]["training"] == "atta"
    assert len(info["history"]["epoch"]) == info["settings"]["epochs"]
    assert info["test_accuracy"] > 0.5
