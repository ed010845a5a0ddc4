import pytest
import torch

from interpretgan.models import SmallCNN
from interpretgan.training import learning_rate, train_natural


def test_paper_schedule():
    rates = [learning_rate(e, 0.01, (5,), 0.1) for e in range(10)]
    assert rates[:5] == [0.01] * 5 and rates[5:] == pytest.approx([0.001] * 5)


def _train(train_set, test_set, epochs, checkpoint=None):
    torch.manual_seed(123)  # the model's initialisation
    model = SmallCNN()
    hist = train_natural(model, train_set, test_set, epochs=epochs, lr=0.05, lr_milestones=(1,),
                         batch_size=64, seed=5, checkpoint=checkpoint, progress=False)
    return model, hist


def test_resume_after_a_kill_gives_the_uninterrupted_result(train_set, test_set, tmp_path):
    """Stop after epoch 1 (as a killed run leaves its checkpoint), resume to epoch 2: the weights and
    history equal those of one uninterrupted 2-epoch run, dropout and shuffling included."""
    tr, te = train_set.subset(1200, seed=1), test_set.subset(200)
    ref, ref_hist = _train(tr, te, epochs=2)
    ckpt = tmp_path / "checkpoint.pt"
    _train(tr, te, epochs=1, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed, hist = _train(tr, te, epochs=2, checkpoint=ckpt)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert hist["epoch"] == [1, 2] and hist["lr"] == [0.05, pytest.approx(0.005)]
    assert hist["test_accuracy"] == pytest.approx(ref_hist["test_accuracy"])


def test_training_learns(weak_model, test_set):
    from interpretgan.attacks import accuracy

    assert accuracy(weak_model, test_set.subset(2000)) > 0.85
