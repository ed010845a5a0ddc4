"""ATTA-1 + TRADES: the loss, the perturbation buffer, the inverse augmentation, training and resume."""
import math

import pytest
import torch
import torch.nn.functional as F

from interpretgan.attacks import FGSM
from interpretgan.data import ImageSet
from interpretgan.models import SmallCNN
from interpretgan.training import (PerturbationBuffer, atta_attack_step, crop_flip, trades_loss, train_atta,
                                   uncrop_flip)


def test_trades_loss_by_hand():
    torch.manual_seed(0)
    nat, adv, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    loss, natural, robust = trades_loss(nat, adv, y, beta=6.0)
    p, q = nat.softmax(1), adv.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1).mean()  # KL(natural || adversarial), mean over the batch
    torch.testing.assert_close(natural, F.cross_entropy(nat, y))
    torch.testing.assert_close(robust, kl)
    torch.testing.assert_close(loss, F.cross_entropy(nat, y) + 6.0 * kl)
    assert trades_loss(nat, nat, y, 6.0)[2].abs() < 1e-6  # no perturbation, no KL
    # a shard's sum over a global denominator: two halves add up to the whole batch's loss
    halves = [trades_loss(nat[s], adv[s], y[s], 6.0, denominator=6)[0] for s in (slice(0, 2), slice(2, 6))]
    torch.testing.assert_close(halves[0] + halves[1], loss)


def test_buffer_is_the_same_for_any_number_of_processes():
    one = PerturbationBuffer(11, (1, 4, 4), seed=3)
    assert one.delta.std().item() == pytest.approx(0.001, rel=0.3)
    full = one.full()
    for world in (2, 3):
        parts = [PerturbationBuffer(11, (1, 4, 4), seed=3, rank=r, world=world) for r in range(world)]
        for idx in range(11):
            owner = parts[idx % world]
            assert owner.owned(torch.tensor([idx])).item()
            torch.testing.assert_close(owner.get(torch.tensor([idx])), full[idx:idx + 1], rtol=0, atol=0)
    b = PerturbationBuffer(11, (1, 4, 4), seed=4)
    b.put(torch.tensor([2, 7]), torch.ones(2, 1, 4, 4))
    assert b.get(torch.tensor([7])).eq(1).all() and not b.get(torch.tensor([3])).eq(1).any()
    c = PerturbationBuffer(11, (1, 4, 4), seed=9)
    c.load_full(b.full())
    torch.testing.assert_close(c.delta, b.delta, rtol=0, atol=0)


def test_crop_flip_matches_a_per_image_reference_and_inverts():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    offsets = torch.randint(0, 9, (5, 2))
    flips = torch.tensor([True, False, True, False, True])
    out = crop_flip(x, offsets, flips)
    for k in range(5):
        ref = F.pad(x[k], (4, 4, 4, 4))[:, offsets[k, 0]:offsets[k, 0] + 8, offsets[k, 1]:offsets[k, 1] + 8]
        ref = ref.flip(-1) if flips[k] else ref
        torch.testing.assert_close(out[k], ref, rtol=0, atol=0)
    # writing the augmented view back unchanged gives the original perturbation
    torch.testing.assert_close(uncrop_flip(out, x, offsets, flips), x, rtol=0, atol=0)
    # a changed augmented view lands on the covered pixels only
    new = uncrop_flip(torch.full_like(out, 7.0), x, offsets, flips)
    covered = uncrop_flip(torch.ones_like(out), torch.zeros_like(x), offsets, flips).bool()
    assert new[covered].eq(7).all() and torch.equal(new[~covered], x[~covered])
    assert covered[offsets.eq(4).all(1)].all()  # the centre crop covers every pixel


def test_one_atta_step_from_a_zero_buffer_is_fgsm(weak_model, test_set):
    x, y = test_set.subset(64).tensors()
    delta = atta_attack_step(weak_model, x, y, torch.zeros_like(x), eps=0.3, step_size=0.05, exact=True)
    torch.testing.assert_close(x + delta, FGSM(0.05, exact=True)(weak_model, x, y), rtol=0, atol=1e-6)
    big = atta_attack_step(weak_model, x, y, torch.full_like(x, 0.29), eps=0.3, step_size=0.05, exact=True)
    assert big.abs().max() <= 0.3 + 1e-6 and (x + big).min() >= 0 and (x + big).max() <= 1


def _atta(train, test, epochs, checkpoint=None, **kw):
    torch.manual_seed(7)
    model = SmallCNN(dropout=kw.pop("dropout", 0.5))
    hist = train_atta(model, train, test, epochs=epochs, lr=0.01, eps=0.3, step_size=0.05, batch_size=64, seed=2,
                      checkpoint=checkpoint, progress=False, exact=True, **kw)
    return model, hist


def test_buffer_grows_by_one_step_per_epoch_and_resume_equals_uninterrupted(train_set, test_set, tmp_path):
    tr, te = train_set.subset(384, seed=5), test_set.subset(100)
    ref, ref_hist = _atta(tr, te, epochs=2)
    # every sample takes one sign step of 0.05 per epoch from its buffered perturbation (less where the
    # gradient is zero: fc3 starts at zero, so the very first batch does not move)
    first, second = ref_hist["perturbation"]
    assert 0.04 < first <= 0.05 + 0.004 and 0.09 < second <= 0.10 + 0.004
    assert math.isnan(ref_hist["robust_accuracy"][0])  # no eval attack given
    ckpt = tmp_path / "atta.pt"
    _atta(tr, te, epochs=1, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and state["buffer"].shape == (384, 1, 32, 32)
    assert state["buffer"].abs().max() <= 0.05 + 0.005
    resumed, hist = _atta(tr, te, epochs=2, checkpoint=ckpt)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert hist["train_loss"] == pytest.approx(ref_hist["train_loss"], rel=1e-6)


def test_warmup_raises_the_rate_linearly_step_by_step_and_resumes_on_it(train_set, test_set, tmp_path, monkeypatch):
    """``warmup_epochs=1.5`` at 4 steps an epoch: the rates of the first 6 steps are lr * 1/6 .. 6/6, then lr (and the
    milestone's lr / 10 after epoch 2); a run resumed after epoch 1, mid-warm-up, takes the same steps."""
    tr, te = train_set.subset(256, seed=5), test_set.subset(50)
    rates = []
    step = torch.optim.SGD.step

    def recording(self, *a, **kw):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    ref, _ = _atta(tr, te, epochs=3, warmup_epochs=1.5, lr_milestones=(2,))
    lr = 0.01
    assert rates == pytest.approx([lr * s / 6 for s in range(1, 7)] + [lr] * 2 + [lr / 10] * 4, rel=1e-12)
    rates.clear()
    ckpt = tmp_path / "warm.pt"
    _atta(tr, te, epochs=1, checkpoint=ckpt, warmup_epochs=1.5, lr_milestones=(2,))
    resumed, _ = _atta(tr, te, epochs=3, checkpoint=ckpt, warmup_epochs=1.5, lr_milestones=(2,))
    assert rates[4:] == pytest.approx([lr * 5 / 6, lr, lr, lr] + [lr / 10] * 4, rel=1e-12)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_augmented_buffer_stays_in_the_ball_and_the_image_range(tmp_path):
    from interpretgan.models import build

    torch.manual_seed(0)
    n = 96
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)),
                    torch.arange(n), "random")
    model = build("vgg16", pooling="avg", width=0.125)
    ckpt = tmp_path / "aug.pt"
    train_atta(model, data, data, epochs=3, lr=0.01, eps=0.031, step_size=0.015, batch_size=32, augment=True,
               checkpoint=ckpt, progress=False, exact=True)
    delta = torch.load(ckpt, weights_only=True)["buffer"]
    x = data.images.float() / 255
    assert delta.abs().max() <= 0.031 + 1e-6
    moved = delta.abs() > 0.006  # attacked pixels (the others keep the fresh buffer's 0.001 * randn)
    assert moved.float().mean() > 0.5
    assert (x + delta)[moved].min() >= -1e-6 and (x + delta)[moved].max() <= 1 + 1e-6
    assert delta.abs().flatten(1).amax(1).min() > 0.02  # every sample was attacked, most pixels more than once


def test_a_checkpoint_without_its_buffer_resumes_at_a_buffer_reset_to_the_uninterrupted_run(train_set, test_set,
                                                                                               tmp_path):
    """A training stage carried between machines drops ATTA's buffer (50,000 perturbations) where the next epoch
    resets it anyway: resumed after epoch 1 of 2 with ``reset_every=1``, the weights equal the uninterrupted run's;
    at an epoch that does not end a reset period the run refuses, naming the lost buffer. ``on_epoch`` gets each
    epoch's checkpoint dict."""
    tr, te = train_set.subset(256, seed=5), test_set.subset(50)
    ref, ref_hist = _atta(tr, te, epochs=2, reset_every=1)
    assert ref_hist["perturbation"][1] <= 0.05 + 0.004  # reset after epoch 1: one step again, not two
    seen = []
    ckpt = tmp_path / "stage.pt"
    _atta(tr, te, epochs=1, checkpoint=ckpt, reset_every=1, on_epoch=lambda s: seen.append((s["epoch"], s["buffer"])))
    assert [e for e, _ in seen] == [1] and seen[0][1].shape == (256, 1, 32, 32)
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "buffer": None}, ckpt)
    resumed, hist = _atta(tr, te, epochs=2, checkpoint=ckpt, reset_every=1)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert hist["train_loss"] == pytest.approx(ref_hist["train_loss"], rel=1e-6)
    torch.save({**state, "buffer": None}, ckpt)
    with pytest.raises(ValueError, match="no perturbation buffer.*reset_every=2"):
        _atta(tr, te, epochs=2, checkpoint=ckpt, reset_every=2)
