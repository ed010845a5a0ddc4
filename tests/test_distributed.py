"""ATTA under DistributedDataParallel (gloo, 2 CPU processes) equals the single-process run."""
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from interpretgan.data import mnist32
from interpretgan.models import SmallCNN
from interpretgan.training import train_atta

N_TRAIN, BATCH = 320, 64  # 5 global steps per epoch


def _run(checkpoint, epochs=2):
    """Train a dropout-free SmallCNN with ATTA in exact fp32; returns the model and history."""
    tr, te = mnist32("train").subset(N_TRAIN, seed=3), mnist32("test").subset(64)
    torch.manual_seed(11)
    model = SmallCNN(dropout=0.0)
    torch.nn.init.normal_(model.fc3[0].weight, std=0.05)  # so the first steps already have input gradients
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
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ref, ref_hist = _run(tmp_path / "single.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for state in ranks:  # both replicas hold the single-process weights after 10 steps
        for name, value in ref.state_dict().items():
            torch.testing.assert_close(state["model"][name], value, rtol=0, atol=1e-5)
    moved = sum((a - b).abs().sum() for a, b in zip(ref.state_dict().values(), SmallCNN(dropout=0.0).state_dict().values()))
    assert moved > 1.0  # the weights did change
    for key in ("train_loss", "perturbation", "train_robust_accuracy", "test_accuracy"):
        assert ranks[0]["history"][key] == __import__("pytest").approx(ref_hist[key], abs=1e-5)
    # the checkpoint rank 0 wrote holds the whole buffer, gathered from both ranks, as one process has it
    ddp, single = (torch.load(tmp_path / f, weights_only=True) for f in ("ddp.pt", "single.pt"))
    assert ddp["buffer"].shape == single["buffer"].shape == (N_TRAIN, 1, 32, 32)
    torch.testing.assert_close(ddp["buffer"], single["buffer"], rtol=0, atol=1e-5)


def test_torchrun_entry_point_trains_into_the_cache(tmp_path):
    """``torchrun -m interpretgan.distributed`` at the smoke profile: rank 0 caches the model, which
    :func:`interpretgan.zoo.classifier` then loads."""
    from interpretgan.zoo import classifier

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
