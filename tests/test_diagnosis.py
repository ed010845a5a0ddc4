"""The layer diagnosis: Acc_i / Vul_i with bootstrap intervals, and the max-pool index study."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from interpretgan import diagnosis
from interpretgan.diagnosis import (adversarial_class_share, attack_share, maxpool_index_change, order_layers,
                                    panel_correctness, random_sign_noise, sum_check, vulnerability, vulnerable_layers)


def test_vulnerability_by_hand():
    correct = {"a": torch.tensor([1, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool),   # Acc 6/8
               "b": torch.tensor([1, 0, 1, 0, 1, 1, 0, 0], dtype=torch.bool),   # Acc 4/8
               "c": torch.tensor([1, 1, 1, 0, 0, 1, 0, 0], dtype=torch.bool)}   # Acc 4/8 (one gained, one lost)
    t = vulnerability(correct, n_resamples=500)
    assert t["acc"].tolist() == pytest.approx([0.75, 0.5, 0.5])
    assert t["vul"].tolist() == pytest.approx([0.25, 0.25, 0.0])  # Vul_1 = 1 - Acc_1; Vul_i = Acc_{i-1} - Acc_i
    assert sum_check(t) == pytest.approx(0.0, abs=1e-12)  # the Vul_i sum to 1 - Acc_last
    assert (t["acc_low"] <= t["acc"]).all() and (t["acc"] <= t["acc_high"]).all()
    assert (t["vul_low"] <= t["vul"]).all() and (t["vul"] <= t["vul_high"]).all()
    assert t.loc["c", "vul_low"] < 0 < t.loc["c", "vul_high"]  # a gain and a loss: the interval spans zero


def test_intervals_shrink_like_one_over_root_n_and_flag_vulnerable_layers():
    rng = np.random.default_rng(0)
    widths = []
    for n in (400, 6400):
        a = torch.from_numpy(rng.random(n) < 0.9)
        b = a & torch.from_numpy(rng.random(n) < 0.5)  # layer b loses about half of a's correct images
        t = vulnerability({"a": a, "b": b}, n_resamples=1000)
        widths.append(t.loc["b", "acc_high"] - t.loc["b", "acc_low"])
        # a binomial proportion's 95% interval is about 2 * 1.96 * sqrt(p (1 - p) / n) wide
        p = t.loc["b", "acc"]
        assert widths[-1] == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.15)
    assert widths[1] < widths[0] / 3
    assert vulnerable_layers(t) == ["b"]


def test_maxpool_index_change_by_hand():
    pool = nn.Sequential(nn.MaxPool2d(2, 2))
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 0, 0] = 1.0                     # window 1: argmax at (0, 0); window 2: all zero (tied)
    x_adv = x.clone()
    x_adv[0, 0, 1, 1] = 2.0                 # window 1's argmax moves to (1, 1); window 2 stays tied
    t = maxpool_index_change(pool, x, x_adv)
    assert t.loc["0", "windows"] == 2
    assert t.loc["0", "tied"] == pytest.approx(0.5)
    assert t.loc["0", "changed_untied"] == pytest.approx(1.0)  # the one untied window changed
    same = maxpool_index_change(pool, x, x.clone())
    assert same.loc["0", "changed"] == 0.0
    assert (same.loc["0", "changed_low"], same.loc["0", "changed_high"]) == (0.0, 0.0)
    with pytest.raises(TypeError, match="x must hold float images"):  # an ImageSet's uint8 images, not [0, 1]
        maxpool_index_change(pool, (x * 255).to(torch.uint8), x_adv)


def test_maxpool_index_change_interval_is_over_images():
    """Three images with 4 windows each, whose argmax moves in 0, 1 and 4 windows: changed is 5 / 12 (the mean of
    the images' own shares 0, 1/4, 1), and the bootstrap interval lies within their range around it."""
    pool = nn.Sequential(nn.MaxPool2d(2, 2))
    x = torch.zeros(3, 1, 2, 8)
    x[:, 0, 0, ::2] = 1.0                   # every window's argmax at its top-left
    x_adv = x.clone()
    x_adv[1, 0, 1, 1] = 2.0                 # image 1: one window moves
    x_adv[2, 0, 1, 1::2] = 2.0              # image 2: all four move
    t = maxpool_index_change(pool, x, x_adv)
    assert t.loc["0", "changed"] == pytest.approx(5 / 12)
    assert 0.0 <= t.loc["0", "changed_low"] < 5 / 12 < t.loc["0", "changed_high"] <= 1.0


def test_maxpool_study_on_the_paper_model(weak_model, test_set):
    x, _ = test_set.subset(64).tensors()
    t = maxpool_index_change(weak_model, x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1))
    assert list(t.index) == ["conv2.2", "conv4.2"]  # the two pooling layers, in forward order
    assert t.loc["conv2.2", "windows"] == 64 * 32 * 14 * 14 and t.loc["conv4.2", "windows"] == 64 * 64 * 5 * 5
    assert (0 < t["changed"]).all() and (t["changed"] < 1).all()


def test_order_layers_follows_the_forward_pass():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(4, 2)   # registered first, called last
            self.early = nn.Linear(3, 4)

        def forward(self, x):
            return self.late(torch.relu(self.early(x)))

    net = Net()
    assert order_layers(net, ["late", "early"], torch.zeros(1, 3)) == ["early", "late"]
    with pytest.raises(ValueError, match="late, early"):
        order_layers(net, ["middle"], torch.zeros(1, 3))


class TinyResNet(nn.Module):
    """A model the package does not ship: a stem, two residual stages (nested modules) and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.stage1 = nn.ModuleDict({"conv": nn.Conv2d(8, 8, 3, padding=1), "act": nn.ReLU()})
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 10))

    def forward(self, x):
        h = self.stem(x)
        h = self.stage1["act"](h + self.stage1["conv"](h))  # residual
        return self.head(self.stage2(h))


def test_diagnose_any_model(train_set, test_set, tmp_path):
    from interpretgan import gan
    from interpretgan.attacks import PGD
    from interpretgan.diagnosis import diagnose
    from interpretgan.training import train_natural

    torch.manual_seed(0)
    net = TinyResNet()
    train_natural(net, train_set.subset(3000), test_set.subset(200), epochs=1, lr=0.05, progress=False)
    net.eval()
    x, _ = test_set.subset(4).tensors()
    # hooked latents equal a manual forward pass, nested module included
    h = net.stem(x)
    r = net.stage1["act"](h + net.stage1["conv"](h))
    torch.testing.assert_close(gan.latent_of(net, x, "stage1.act"), r)
    torch.testing.assert_close(gan.latent_of(net, x, "stage2"), net.stage2(r))
    settings = gan.GANSettings(code_dim=16, channels=(8, 8, 8, 8), images=(128, 128, 128, 256), batch_size=32,
                               checkpoint_every=10**6, ema=0.9)
    torch.manual_seed(5)  # the attack's random start
    d = diagnose(net, ["head", "stage1.act", "stage2"], PGD(0.2, 0.05, 5), test_set.subset(100),
                 train_set.subset(1000), settings, folder=tmp_path, progress=False, exact=True)
    assert list(d.table.index) == ["stage1.act", "stage2", "head"]  # forward order
    assert sum_check(d.table) == pytest.approx(0.0, abs=1e-9)   # the Vul_i sum to 1 - Acc_last
    assert d.table.loc["stage1.act", "vul"] == pytest.approx(1 - d.table.loc["stage1.act", "acc"])
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["head.safetensors", "stage1.act.safetensors",
                                                                      "stage2.safetensors"]
    torch.manual_seed(5)  # a second call loads the cached generators and gives the same table
    again = diagnose(net, ["stage1.act", "stage2", "head"], PGD(0.2, 0.05, 5), test_set.subset(100),
                     train_set.subset(1000), settings, folder=tmp_path, progress=False, exact=True)
    pd.testing.assert_frame_equal(again.table, d.table)
    # the noise control on the same digits, and the attack's share of each layer's vulnerability
    assert list(d.noise.index) == list(d.table.index) and sum_check(d.noise) == pytest.approx(0.0, abs=1e-9)
    torch.testing.assert_close(torch.tensor(d.attack_share["share"].values),
                               torch.tensor((d.table["vul"] - d.noise["vul"]).values), rtol=0, atol=1e-12)
    # with judges, the panel reads the same explanations; a panel of f alone reproduces f's table
    torch.manual_seed(5)
    with_f = diagnose(net, ["stage1.act", "stage2", "head"], PGD(0.2, 0.05, 5), test_set.subset(100),
                      train_set.subset(1000), settings, folder=tmp_path, progress=False, exact=True, judges={"f": net})
    pd.testing.assert_frame_equal(with_f.panel, with_f.table, check_dtype=False)


def test_random_sign_noise_has_the_attack_size():
    x = torch.full((2, 1, 8, 8), 0.5)
    n = random_sign_noise(x, 0.3, seed=1)
    assert torch.allclose((n - x).abs(), torch.full_like(x, 0.3))  # every pixel moves by exactly eps ...
    assert 0.3 < (n > x).double().mean() < 0.7                     # ... up or down at random
    assert torch.equal(n, random_sign_noise(x, 0.3, seed=1)) and not torch.equal(n, random_sign_noise(x, 0.3, seed=2))
    edge = random_sign_noise(torch.zeros(1, 1, 4, 4), 0.3)
    assert edge.min() >= 0 and set(edge.unique().tolist()) <= {0.0, 0.30000001192092896}  # clipped to [0, 1]


def test_attack_share_by_hand():
    attack = {"a": torch.tensor([1, 0, 0, 0], dtype=torch.bool), "b": torch.tensor([1, 0, 0, 0], dtype=torch.bool)}
    noise = {"a": torch.tensor([1, 1, 1, 0], dtype=torch.bool), "b": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    t = attack_share(attack, noise, n_resamples=500)
    # Vul under attack: a 0.75, b 0; under noise: a 0.25, b 0.25 -> shares 0.5 and -0.25
    assert t["share"].tolist() == pytest.approx([0.5, -0.25])
    assert (t["share_low"] <= t["share"]).all() and (t["share"] <= t["share_high"]).all()
    assert t["share"].sum() == pytest.approx((1 - 0.25) - (1 - 0.5))  # shares sum to the difference in 1 - Acc_last


def test_panel_and_adversarial_class_shares_by_hand():
    labels = torch.tensor([0, 1, 2, 3])
    adv = torch.tensor([5, 1, 7, 8])  # the attack fooled f on images 0, 2, 3 (adversarial classes 5, 7, 8)
    reads = {"f": {"l": torch.tensor([5, 1, 7, 3])},
             "j1": {"l": torch.tensor([0, 1, 7, 3])},
             "j2": {"l": torch.tensor([0, 1, 2, 8])}}
    panel = panel_correctness(reads, labels, ["j1", "j2"])
    assert panel["l"].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5])
    t = adversarial_class_share(reads, labels, adv, ["j1", "j2"])
    assert t.attrs["n_fooled"] == 3
    row = t.loc["l"]
    assert row["f"] == pytest.approx(2 / 3) and row["j1"] == pytest.approx(1 / 3) and row["j2"] == pytest.approx(1 / 3)
    assert row["panel"] == pytest.approx(1 / 3)
    assert row["true class (f)"] == pytest.approx(1 / 3) and row["true class (panel)"] == pytest.approx(2 / 3)


def test_diagnose_gives_the_model_back_as_found_and_refuses_a_shared_module(train_set, test_set, tmp_path):
    from interpretgan import gan
    from interpretgan.attacks import PGD
    from interpretgan.diagnosis import diagnose

    torch.manual_seed(0)
    net = TinyResNet().train()
    net.head[1].weight.requires_grad_(False)  # a user's own partial freeze stays as it is
    before = [(n, q.requires_grad) for n, q in net.named_parameters()]
    settings = gan.GANSettings(code_dim=8, channels=(8, 8, 8, 8), images=(32, 32, 32, 64), batch_size=32,
                               checkpoint_every=10**6, ema=0.9)
    diagnose(net, ["stage2"], PGD(0.2, 0.05, 2), test_set.subset(40), train_set.subset(200), settings,
             progress=False, exact=True, noise=False)
    assert net.training and all(m.training for m in net.modules())
    assert [(n, q.requires_grad) for n, q in net.named_parameters()] == before

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))

        def forward(self, x):
            return self.head(self.conv(self.conv(x)))  # one module object, two calls

    with pytest.raises(ValueError, match="'conv' \\(Conv2d\\) runs 2 times in one forward pass"):
        gan.latent_of(Shared(), torch.zeros(2, 1, 32, 32), "conv")


def test_shipped_scaling_budgets_are_per_layer(monkeypatch):
    from interpretgan import cache, diagnosis, zoo
    key = lambda layer, k: cache.settings_key(zoo.explainer_settings("default", "max", "natural", layer,
                                                                     schedule_factor=k, warm=False))  # from nothing
    shipped = {key("conv1", 1), key("conv2", 1), key("conv1", 4), key("conv2", 4), key("conv1", 16)}
    monkeypatch.setattr(cache, "shipped", lambda k: {"file": "x"} if k in shipped else None)
    assert diagnosis.shipped_scaling_budgets("default") == {"conv1": (1, 4, 16), "conv2": (1, 4)}
    assert not diagnosis.scaling_fits_shipped("default")
    assert diagnosis.scaling_fits_shipped("default", factors=(1, 4))
    assert diagnosis.scaling_fits_shipped("default", layers=("conv1",))
    assert diagnosis.shipped_scaling_budgets("default", layers=("conv2",), factors=(4, 16)) == {"conv2": (4,)}


def _share_table(values, half_width=0.02):
    layers = [f"l{i}" for i in range(len(values))]
    return pd.DataFrame({"share": values, "share_low": [v - half_width for v in values],
                         "share_high": [v + half_width for v in values]}, index=layers)


def test_describe_share_curve_by_hand():
    """Gradual when no step makes up more than half the rise; abrupt at the step that does; flat or falling said."""
    gradual = diagnosis.describe_share_curve(_share_table([0.10, 0.30, 0.50, 0.70, 0.90]))
    assert "from 10.0% [8.0, 12.0] at l0 to 90.0% [88.0, 92.0] at l4" in gradual
    assert "rises at 4 of 4 steps" in gradual and "(4 beyond the 95% intervals)" in gradual
    assert gradual.endswith("(the largest, 25%).") and "Gradual" in gradual
    abrupt = diagnosis.describe_share_curve(_share_table([0.10, 0.12, 0.80, 0.81, 0.90], half_width=0.05))
    assert "rises at 4 of 4 steps between consecutive layers (1 beyond the 95% intervals)" in abrupt
    assert "l1 -> l2 (+68.0 points)" in abrupt and "makes up 85% of the rise" in abrupt
    assert "does not rise overall" in diagnosis.describe_share_curve(_share_table([0.5, 0.6, 0.4]))
    with_nan = _share_table([float("nan"), 0.2, 0.6])
    assert "at l1 to 60.0%" in diagnosis.describe_share_curve(with_nan)
    assert diagnosis.describe_share_curve(_share_table([0.3])).startswith("fewer than two layers")
