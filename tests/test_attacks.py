import pytest
import torch
import torch.nn.functional as F

from interpretgan.attacks import FGSM, MPGD, PGD, accuracy, make_attack, misclassification_matrix, run_attack


@pytest.fixture(scope="module")
def batch(test_set):
    s = test_set.subset(64, seed=3)
    return s.tensors()


@pytest.mark.parametrize("attack", [FGSM(0.3), PGD(0.3, 0.01, 10), MPGD(0.3, 0.01, 10), PGD(8 / 255, 0.003, 5)])
def test_adversarial_images_stay_within_eps_and_in_unit_range(weak_model, batch, attack):
    x, y = batch
    x_adv = attack(weak_model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= attack.eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_fgsm_is_one_signed_gradient_step(weak_model, batch):
    x, y = batch
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(weak_model(xr), y).backward()
    expected = (x + 0.1 * xr.grad.sign()).clamp(0, 1)
    # (exact=True: the hand computation is in fp32; tests/test_fast.py checks the fast path against it)
    torch.testing.assert_close(FGSM(0.1, exact=True)(weak_model, x, y), expected)
    # PGD with one step of size eps and no random start is FGSM
    torch.testing.assert_close(PGD(0.1, alpha=0.1, steps=1, random_start=False, exact=True)(weak_model, x, y), expected)


def test_mpgd_follows_the_sign_of_the_running_gradient_sum(weak_model, batch):
    """Two steps by hand: x1 = P(x + a*sign(g1)), x2 = P(x1 + a*sign(g1 + g2)) with raw gradients g."""
    x, y = batch
    eps, a = 0.3, 0.05

    def grad(z):
        z = z.clone().requires_grad_(True)
        F.cross_entropy(weak_model(z), y, reduction="sum").backward()
        return z.grad

    def proj(z):
        return torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)

    g1 = grad(x)
    x1 = proj(x + a * g1.sign())
    x2 = proj(x1 + a * (g1 + grad(x1)).sign())
    torch.testing.assert_close(MPGD(eps, a, 2, random_start=False, exact=True)(weak_model, x, y), x2)
    pgd2 = PGD(eps, a, 2, random_start=False, exact=True)(weak_model, x, y)
    torch.testing.assert_close(pgd2, proj(x1 + a * grad(x1).sign()))


def test_attacks_do_not_touch_model_weights_or_mode(weak_model, batch):
    x, y = batch
    before = [q.clone() for q in weak_model.parameters()]
    weak_model.train()
    PGD(0.3, 0.01, 3)(weak_model, x, y)
    assert weak_model.training
    weak_model.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, weak_model.parameters()))


def test_make_attack_names_and_steps():
    assert isinstance(make_attack("fgsm", 0.3), FGSM)
    p = make_attack("pgd40", 8 / 255)
    assert type(p) is PGD and p.steps == 40 and p.alpha == 0.01 and p.eps == pytest.approx(8 / 255)
    m = make_attack("mpgd20", 0.3, alpha=0.02)
    assert type(m) is MPGD and m.steps == 20 and m.alpha == 0.02
    with pytest.raises(ValueError, match="fgsm"):
        make_attack("cw", 0.3)


def test_pgd_agrees_with_torchattacks(weak_model, test_set):
    """Robust accuracy under our PGD-20 and torchattacks' PGD-20 (step 0.01, so eps 0.1 is reached in 10
    steps), on 1,000 digits at an epsilon where it lies between 20% and 80% (so the comparison can fail),
    agrees within one point."""
    import torchattacks

    s = test_set.subset(1000, seed=7)
    eps = 0.1
    torch.manual_seed(0)
    ours = run_attack(weak_model, PGD(eps, 0.01, 20), s, progress=False).robust_accuracy
    ref_atk = torchattacks.PGD(weak_model, eps=eps, alpha=0.01, steps=20, random_start=True)
    torch.manual_seed(1)
    correct = 0
    for x, y, _ in s.batches(500):
        correct += int((weak_model(ref_atk(x, y)).argmax(1) == y).sum())
    ref = correct / len(s)
    assert 0.2 <= ref <= 0.8, f"eps {eps} gives robust accuracy {ref:.3f}: outside the informative range"
    assert abs(ours - ref) <= 0.01, (ours, ref)


def test_stronger_attacks_do_not_help_the_model(weak_model, test_set):
    s = test_set.subset(300, seed=11)
    clean = accuracy(weak_model, s)
    torch.manual_seed(0)
    fgsm = run_attack(weak_model, FGSM(0.1), s, progress=False).robust_accuracy
    pgd = run_attack(weak_model, PGD(0.1, 0.01, 40), s, progress=False)
    assert pgd.clean_accuracy == pytest.approx(clean)
    assert pgd.robust_accuracy <= fgsm + 0.01 and fgsm < clean


def test_misclassification_matrix_rows():
    labels = torch.tensor([0, 0, 0, 7, 7, 1])
    adv = torch.tensor([6, 6, 0, 3, 2, 1])
    m = misclassification_matrix(labels, adv)
    assert m[0, 6] == 1.0 and m[7, 3] == 0.5 and m[7, 2] == 0.5
    assert m[1].sum() == 0 and m.diagonal().sum() == 0
