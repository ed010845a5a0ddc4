"""Explanation quality: the stable Fréchet distance, the instance-fidelity measures, the panel's table."""
import warnings

import numpy as np
import pytest
import torch

from interpretgan import quality


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20_000, 3))
    assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(20_000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    # for diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 0 + 1 + 0.25
    assert quality.frechet_distance(a, b) == pytest.approx(2.25, rel=0.03)


def test_frechet_distance_of_two_known_gaussians_with_full_covariances():
    # exact moments: sampled so that the sample covariance is exactly S (whitened, then coloured)
    rng = np.random.default_rng(1)
    d, n = 4, 5_000

    def sample(mu, cov):
        z = rng.normal(size=(n, d))
        z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
        return z @ np.linalg.cholesky(cov).T + mu

    m = rng.normal(size=(d, d))
    s_a, s_b = m @ m.T + np.eye(d), np.diag([1.0, 2.0, 3.0, 4.0])
    mu_a, mu_b = np.zeros(d), np.arange(d, dtype=float)
    # the formula with scipy's general square root, on exact moments
    from scipy import linalg
    expected = (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert quality.frechet_distance(sample(mu_a, s_a), sample(mu_b, s_b)) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_with_singular_covariances_is_finite_and_silent():
    # 500-d features of which 400 are dead (always zero), from 300 samples: both covariances are singular
    rng = np.random.default_rng(2)
    a, b = np.zeros((300, 500)), np.zeros((300, 500))
    a[:, :100] = rng.normal(size=(300, 100))
    b[:, :100] = rng.normal(size=(300, 100)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = quality.frechet_distance(a, b)
        same = quality.frechet_distance(a, a)
    assert np.isfinite(d) and d > 100 * 0.25 * 0.5  # the mean shift alone gives 100 * 0.25
    assert same == pytest.approx(0.0, abs=1e-6)


def test_class_mean_share_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    templates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert quality.class_mean_share(templates, labels) == pytest.approx(1.0)
    same_means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert quality.class_mean_share(same_means, labels) == pytest.approx(0.0)
    # class means (0.5, 0) and (-0.5, 0), grand mean 0: between SS = 4 * 0.25 = 1; total = 1 + 4 * 1 = 5
    x = torch.tensor([[0.5, 1.0], [0.5, -1.0], [-0.5, 1.0], [-0.5, -1.0]])
    assert quality.class_mean_share(x, labels) == pytest.approx(0.2)


def test_same_label_distance_by_hand():
    labels = torch.tensor([3, 3, 5, 5])
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    assert quality.same_label_distance(x, labels) == pytest.approx((5.0 + 0.0) / 2)
    assert quality.same_label_distance(x[:, None, :], labels) == pytest.approx(2.5)  # any image shape


class _FeatureReader(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def features(self, x):
        return self.model.fc2(self.model.fc1(self.model.conv4(self.model.conv3(self.model.conv2(self.model.conv1(x))))))

    def forward(self, x):
        return self.model(x)


def test_evaluate_an_identity_explainer_matches_the_real_digits(weak_model, test_set, identity_explainer):
    data = test_set.subset(400, seed=5)
    judge = _FeatureReader(weak_model)
    table = quality.evaluate(weak_model, {"a": judge, "b": judge}, {"conv1": identity_explainer()}, data, exact=True)
    ref = quality.reference({"a": judge, "b": judge}, data, exact=True)
    row = table.loc["conv1"]
    assert row["f"] == pytest.approx(ref["a"]) and row["panel mean"] == row["panel min"] == pytest.approx(ref["a"])
    assert row["Fréchet a"] == pytest.approx(0.0, abs=1e-6)  # explanations are the real digits
    assert row["class-mean share"] == pytest.approx(ref["class-mean share"])
    assert row["same-label distance"] == pytest.approx(ref["same-label distance"])
    assert 0.1 < ref["class-mean share"] < 0.4 and 7 < ref["same-label distance"] < 11  # MNIST's own


def test_evaluate_without_a_panel_reads_by_f_alone(weak_model, test_set, identity_explainer):
    """CIFAR-10 has no panel: the table holds f's reading and how the explanations follow their inputs, and no
    panel column (08 stopped here on CIFAR-10 with an empty panel before)."""
    data = test_set.subset(200, seed=5)
    table = quality.evaluate(weak_model, {}, {"conv1": identity_explainer()}, data, exact=True)
    assert not [c for c in table.columns if c.startswith(("panel", "Fréchet"))]
    row = table.loc["conv1"]
    correct = (quality.read({"f": weak_model}, {"conv1": data.tensors()[0]}, True)["f"]["conv1"] == data.labels)
    assert row["f"] == pytest.approx(correct.double().mean().item())  # explanations are the images themselves
    assert row["retrieval"] == pytest.approx(1.0)


def _spread_images(n: int, seed: int = 0) -> torch.Tensor:
    """n random 1 x 8 x 8 images in [0, 1]: any two lie about 2.3 apart (far above 0.5)."""
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_retrieval_of_a_perfect_copy_a_template_and_a_shuffle():
    x = _spread_images(60)
    labels = torch.arange(60) % 3
    assert quality.retrieval(x, x, labels) == 1.0
    # one template per label: never strictly nearer to its own input than to all 19 others of the label
    templates = torch.stack([x[labels == c].mean(0) for c in range(3)])[labels]
    assert quality.retrieval(templates, x, labels) <= 3 / 60
    # each explanation is another same-label input: its own input is never the nearest
    shifted = torch.cat([x[labels == c].roll(1, 0) for c in range(3)])
    ordered = torch.cat([labels[labels == c] for c in range(3)])
    inputs = torch.cat([x[labels == c] for c in range(3)])
    assert quality.retrieval(shifted, inputs, ordered) == 0.0
    # a copy with small noise still finds its input; the label restricts the search
    assert quality.retrieval(x + 0.01 * torch.randn_like(x), x, labels) == 1.0


def test_distinct_count_of_copies_templates_and_near_duplicates():
    x = _spread_images(50)
    assert quality.distinct_count(x, threshold=0.5) == 50
    assert quality.distinct_count(x[:1].expand(40, -1, -1, -1), threshold=0.5) == 1
    # five pictures, each drawn eight times with noise of L2 about 0.08: five distinct ones
    five = x[:5].repeat(8, 1, 1, 1) + 0.01 * torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert quality.distinct_count(five, threshold=0.5) == 5
    # by hand: points 0, 1.5, 3 on a line with threshold 2: 0 is kept, 1.5 is near it, 3 is new
    line = torch.tensor([[0.0], [1.5], [3.0]])
    assert quality.distinct_count(line, threshold=2.0) == 2
    assert quality.distinct_count(line, threshold=1.0) == 3


def test_following_by_class_names_each_measure_per_class():
    x = _spread_images(40)
    labels = (torch.arange(40) >= 30).long()  # 30 of class 0, 10 of class 1
    x_hat = x.clone()
    x_hat[labels == 1] = x[labels == 1].mean(0)  # class 1 drawn as one template, class 0 copied
    row = quality.following_by_class(x_hat, x, labels, {0: "female", 1: "male"}, threshold=0.5)
    assert row["retrieval female"] == 1.0 and row["retrieval male"] == pytest.approx(0.1)  # one of 10: the nearest
    assert row["distinct female"] == 30 and row["distinct male"] == 1
    assert row["same-label distance male"] == pytest.approx(0.0, abs=1e-6)
    assert "class-mean share female" not in row


def test_following_table_puts_the_real_images_last(test_set, identity_explainer):
    data = test_set.subset(300, seed=2)
    table = quality.following_table({"copy": {"conv1": identity_explainer()}}, data, exact=True)
    assert list(table.index) == [("copy", "conv1"), ("real images", "-")]
    assert (table.loc[("copy", "conv1")] == table.loc[("real images", "-")]).all()
    assert table.loc[("copy", "conv1"), "retrieval"] == 1.0
