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
