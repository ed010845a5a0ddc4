"""InterpretGAN: Table 4's compression networks, the progressive blocks, the losses, fitting and resume."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interpretgan import gan
from interpretgan.models import SmallCNN, latent_shapes

TABLE4 = {  # the paper's Table 4, word for word (its "AvgPooling" after each conv)
    "conv1": "3x3 Conv, 64 -> AvgPooling -> 3x3 Conv, 128 -> AvgPooling -> 3x3 Conv, 256 -> AvgPooling -> FC",
    "conv2": "3x3 Conv, 64 -> AvgPooling -> 3x3 Conv, 128 -> AvgPooling -> FC",
    "conv3": "3x3 Conv, 128 -> AvgPooling -> 3x3 Conv, 256 -> AvgPooling -> FC",
    "conv4": "FC", "fc1": "FC", "fc2": "FC", "fc3": "FC",
}
TINY = gan.GANSettings(code_dim=32, channels=(16, 16, 8, 8), images=(256, 256, 256, 512), batch_size=32,
                       checkpoint_every=512, ema=0.9)


@pytest.mark.parametrize("layer", list(TABLE4))
def test_compression_networks_are_table_4(layer):
    shape = latent_shapes(SmallCNN())[layer]
    c = gan.CompressionNet(shape, code_dim=128)
    assert c.describe() == TABLE4[layer]
    assert c(torch.randn(3, *shape)).shape == (3, 128)


def test_compression_net_for_any_latent_shape():
    for shape in [(3, 32, 32), (512, 1, 1), (256, 4, 4), (640, 8, 8), (10,)]:
        assert gan.CompressionNet(shape, 64)(torch.randn(2, *shape)).shape == (2, 64)


def test_generator_scales_and_fade_in():
    torch.manual_seed(0)
    G = gan.Generator(32, (16, 16, 8, 8))
    code = torch.randn(5, 32)
    for scale, res in enumerate(gan.RESOLUTIONS):
        assert G(code, scale).shape == (5, 1, res, res)
    # alpha 1 is the new scale alone; alpha 0 is the previous scale's image, upsampled
    torch.testing.assert_close(G(code, 2, 1.0), G(code, 2))
    torch.testing.assert_close(G(code, 2, 0.0), F.interpolate(G(code, 1), scale_factor=2, mode="nearest"))


def test_discriminator_fade_in_and_minibatch_std():
    torch.manual_seed(0)
    D = gan.Discriminator((16, 16, 8, 8))
    x = torch.randn(8, 1, 16, 16)
    assert D(x, 2).shape == (8,)
    # at alpha 0 the critic of a new scale is the previous scale's critic on the downsampled image
    torch.testing.assert_close(D(x, 2, 0.0), D(F.avg_pool2d(x, 2), 1))
    h = torch.randn(8, 3, 2, 2)
    out = gan.MinibatchStd()(h)
    by_hand = torch.stack([h.reshape(4, 2, 3, 2, 2)[:, j].std(dim=0, unbiased=False).mean() for j in range(2)])
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, 3, 0, 0], by_hand.repeat(4), rtol=1e-4, atol=1e-6)


def test_pixel_norm_and_equalized_layers():
    x = torch.randn(4, 6, 3, 3) * 5
    torch.testing.assert_close(gan.PixelNorm()(x).pow(2).mean(1), torch.ones(4, 3, 3), rtol=1e-4, atol=1e-4)
    conv = gan.EqualizedConv2d(6, 2, 3, padding=1)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * np.sqrt(2) / np.sqrt(54), conv.bias, padding=1))


def test_interpretability_loss_is_the_soft_label_cross_entropy(weak_model, test_set):
    x, _ = test_set.subset(16).tensors()
    p = F.softmax(weak_model(x), 1)
    x_hat = torch.rand_like(x)
    ours = gan.interpretability_loss(weak_model, x_hat, p, exact=True)
    torch.testing.assert_close(ours, F.cross_entropy(weak_model(x_hat), p))  # torch's probability targets
    # an explanation identical to the input scores the entropy of f's prediction (L_I = 0 up to H(y))
    entropy = -(p * p.log()).sum(1).mean()
    torch.testing.assert_close(gan.interpretability_loss(weak_model, x, p, exact=True), entropy)


def test_latent_match_loss_known_answers(weak_model, test_set):
    """0 for the input itself, 1 for an image whose latent is zero; its cross-entropy is interpretability_loss's;
    and its key is left out of the settings' dict at 0 (earlier cache keys unchanged)."""
    x, _ = test_set.subset(16).tensors()
    p = F.softmax(weak_model(x), 1)
    latent = gan.latent_of(weak_model, x, "conv2")
    match, ce = gan.latent_match_loss(weak_model, x, "conv2", latent, p, exact=True)
    assert float(match) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(ce, gan.interpretability_loss(weak_model, x, p, exact=True))
    x_hat = torch.rand_like(x)
    match, _ = gan.latent_match_loss(weak_model, x_hat, "fc2", gan.latent_of(weak_model, x, "fc2"), p, exact=True)
    seen, want = gan.latent_of(weak_model, x_hat, "fc2"), gan.latent_of(weak_model, x, "fc2")
    assert float(match) == pytest.approx(float((seen - want).pow(2).mean() / want.pow(2).mean()), rel=1e-5)
    assert "latent_match" not in gan.GANSettings().as_dict()
    assert gan.GANSettings(latent_match=0.5).as_dict()["latent_match"] == 0.5


def test_latent_match_step_records_the_term_and_pulls_the_latent_closer(weak_model, test_set):
    """A few generator steps with only the latent-matching term weighted: the recorded term falls."""
    x, _ = test_set.subset(32).tensors()
    settings = gan.GANSettings(code_dim=16, channels=(8, 8, 8, 8), batch_size=32, images=(0, 0, 0, 32),
                               interpretability=0.0, latent_match=100.0, lr=0.01)
    torch.manual_seed(0)
    latent = gan.latent_of(weak_model, x, "conv3")
    nets = gan.fit._build_nets(tuple(latent.shape[1:]), 1, settings, torch.device("cpu"), True)
    target = F.softmax(weak_model(x), 1)
    matches = []
    for _ in range(15):
        fake = nets.G(nets.C(latent), 3, 1.0)
        rec = gan.generator_step(nets, weak_model, fake, target, x, 3, 1.0, settings, exact=True, layer="conv3",
                                 latent=latent)
        matches.append(rec["match"])
    assert matches[-1] < 0.8 * matches[0]


def test_phase_schedule():
    s = gan.GANSettings(images=(100, 200, 200, 400))
    assert gan.phase_at(s, 0) == (0, 1.0) and gan.phase_at(s, 99) == (0, 1.0)
    assert gan.phase_at(s, 100) == (1, 0.0) and gan.phase_at(s, 150) == (1, 0.5) and gan.phase_at(s, 250) == (1, 1.0)
    assert gan.phase_at(s, 600) == (3, 0.5) and gan.phase_at(s, 10**6) == (3, 1.0)


def test_hooked_latent_equals_forward_to(weak_model, test_set):
    x, _ = test_set.subset(4).tensors()

    class Wrapped(torch.nn.Module):  # no forward_to: the latent comes from a forward hook
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    for layer in ("conv2", "fc1"):
        torch.testing.assert_close(gan.latent_of(Wrapped(weak_model), x, f"inner.{layer}"),
                                   weak_model.forward_to(x, layer))


@pytest.fixture(scope="module")
def uninterrupted(weak_model, train_set):
    """``fit(gp_every)``: the uninterrupted TINY fit of fc1 (seed 1, 600 digits) the resume tests compare
    against, fitted once per ``gp_every`` for the module."""
    fits = {}

    def fit(gp_every: int = 1):
        if gp_every not in fits:
            fits[gp_every] = gan.fit_layer(weak_model, "fc1", train_set.subset(600, seed=3),
                                           dataclasses.replace(TINY, gp_every=gp_every), seed=1, progress=False,
                                           exact=True)
        return fits[gp_every]
    return fit


@pytest.mark.parametrize("gp_every", [1, 3])
def test_fit_resumes_after_a_kill_to_the_uninterrupted_result(weak_model, train_set, test_set, tmp_path, monkeypatch,
                                                               gp_every, uninterrupted):
    settings = dataclasses.replace(TINY, gp_every=gp_every)
    tr = train_set.subset(600, seed=3)
    ref, ref_hist = uninterrupted(gp_every)
    real_save, calls = gan.fit.save_checkpoint, []

    def save_then_die(obj, path):  # the process is killed right after its first checkpoint
        real_save(obj, path)
        calls.append(obj["shown"])
        raise KeyboardInterrupt

    monkeypatch.setattr(gan.fit, "save_checkpoint", save_then_die)
    ckpt = tmp_path / "gan.pt"
    with pytest.raises(KeyboardInterrupt):
        gan.fit_layer(weak_model, "fc1", tr, settings, seed=1, checkpoint=ckpt, progress=False, exact=True)
    monkeypatch.setattr(gan.fit, "save_checkpoint", real_save)
    assert calls == [256]  # the end of the first scale
    resumed, hist = gan.fit_layer(weak_model, "fc1", tr, settings, seed=1, checkpoint=ckpt, samples_dir=tmp_path / "s",
                                  progress=False, exact=True)
    for a, b in zip(gan.explainer_state(ref).values(), gan.explainer_state(resumed).values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert hist["loss_d"] == pytest.approx(ref_hist["loss_d"], rel=1e-4)
    assert hist["gp"] == pytest.approx(ref_hist["gp"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"images{k:08d}.png" for k in (512, 768, 1024, 1280)]
    rebuilt = gan.build_explainer(weak_model, "fc1", settings, gan.explainer_state(resumed))
    x, _ = test_set.subset(8).tensors()
    torch.testing.assert_close(rebuilt(x, exact=True), resumed(x, exact=True))


def test_timed_checkpoints_between_the_scheduled_ones_resume_to_the_same_weights(weak_model, train_set, tmp_path,
                                                                                   monkeypatch, uninterrupted):
    """A slow machine writes a checkpoint every ``checkpoint_minutes`` of wall time as well; killed right after
    one in the middle of a scale, the fit resumes to the uninterrupted weights, with the scheduled sample
    grids only."""
    tr = train_set.subset(600, seed=3)
    ref, ref_hist = uninterrupted()
    real_save, calls = gan.fit.save_checkpoint, []

    def save_and_count(obj, path):
        real_save(obj, path)
        calls.append(obj["shown"])

    def save_then_die(obj, path):
        save_and_count(obj, path)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(gan.fit, "save_checkpoint", save_then_die)
    ckpt = tmp_path / "gan.pt"
    with pytest.raises(KeyboardInterrupt):  # 0 minutes: a timed checkpoint after every step
        gan.fit_layer(weak_model, "fc1", tr, TINY, seed=1, checkpoint=ckpt, progress=False, exact=True,
                      checkpoint_minutes=0)
    assert calls == [32, 64, 96]  # mid-scale: the first scheduled one is at 256
    calls.clear()
    monkeypatch.setattr(gan.fit, "save_checkpoint", save_and_count)
    resumed, hist = gan.fit_layer(weak_model, "fc1", tr, TINY, seed=1, checkpoint=ckpt, samples_dir=tmp_path / "s",
                                  progress=False, exact=True, checkpoint_minutes=None)
    assert calls == [256, 512, 768, 1024, 1280]  # None: the scheduled checkpoints only
    for a, b in zip(gan.explainer_state(ref).values(), gan.explainer_state(resumed).values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert hist["loss_d"] == pytest.approx(ref_hist["loss_d"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"images{k:08d}.png" for k in (256, 512, 768, 1024, 1280)]


def test_monitor_and_sample_grids_show_the_scale_being_trained(weak_model, train_set, test_set, monkeypatch):
    """At the end of the 4x4 scale the grid shows 4x4 explanations (constant 8x8 blocks at 32 px), not the
    untrained higher scales; at the end, full-resolution ones, equal to the returned explainer's."""
    grids = []
    monkeypatch.setattr(gan.fit, "save_grid", lambda images, path, nrow=8: grids.append(images.clone()))
    tr = train_set.subset(600, seed=3)
    expl, hist = gan.fit_layer(weak_model, "fc1", tr, TINY, seed=1, progress=False, exact=True,
                               monitor_set=test_set.subset(64), samples_dir="unused")
    assert hist["monitor_images"] == [256, 512, 768, 1024, 1280] and len(grids) == 5
    first = grids[0][32:]  # the explanations under the 32 monitor images
    blocks = F.interpolate(first[..., ::8, ::8], scale_factor=8, mode="nearest")
    torch.testing.assert_close(first, blocks, rtol=0, atol=0)
    assert first.std() > 0.01  # not a blank image
    x_m, _ = test_set.subset(64).take(slice(0, 32)).tensors()
    last = grids[-1][32:]
    torch.testing.assert_close(last, expl(x_m, exact=True))
    assert (last - F.interpolate(last[..., ::8, ::8], scale_factor=8, mode="nearest")).abs().max() > 0.05
    assert expl.growing is None


def test_the_interpretability_term_makes_explanations_classifiable(weak_model, train_set, test_set):
    """Same fit with lambda 1 and lambda 0 on the logits layer: only lambda 1 gives explanations that f
    labels like the images they explain (lambda 0 is a GAN that ignores what f needs)."""
    tr, te = train_set.subset(3000, seed=4), test_set.subset(300)
    acc = {}
    for lam in (1.0, 0.0):
        s = dataclasses.replace(TINY, images=(256, 256, 512, 1536), interpretability=lam)
        expl, _ = gan.fit_layer(weak_model, "fc3", tr, s, progress=False, exact=True)
        acc[lam] = gan.explanation_accuracy(weak_model, expl, te, exact=True)
    assert acc[1.0] > acc[0.0] + 0.2 and acc[0.0] < 0.3


def test_codes_are_standardised_in_training_and_per_image_when_explaining():
    """C's code is standardised over the batch while fitting (no collapse to one code); in eval mode it uses
    the running statistics, so an image's explanation does not depend on the other images in its batch."""
    torch.manual_seed(0)
    c = gan.CompressionNet((32, 14, 14), code_dim=16)
    lat = torch.relu(torch.randn(64, 32, 14, 14)) + 3.0  # a large shared offset, as after a ReLU
    code = c(lat)
    torch.testing.assert_close(code.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    var = code.var(0, unbiased=False)  # v / (v + 1e-5): BatchNorm's epsilon keeps it a little under 1
    assert bool(((var > 0.9) & (var <= 1.0)).all())
    c.eval()
    torch.testing.assert_close(c(lat[5:6]), c(lat)[5:6])


def test_ema_moves_weights_and_copies_the_running_statistics():
    torch.manual_seed(0)
    c, e = gan.CompressionNet((10,), 4), gan.CompressionNet((10,), 4)
    c(torch.randn(32, 10) * 5 + 2)  # updates c's running statistics
    w_before = e.net[-1].weight.clone()
    gan.fit._ema_update(e, c, 0.9)
    torch.testing.assert_close(e.net[-1].weight, 0.9 * w_before + 0.1 * c.net[-1].weight)
    torch.testing.assert_close(e.standardise.running_mean, c.standardise.running_mean)
    torch.testing.assert_close(e.standardise.running_var, c.standardise.running_var)


def test_lazy_gradient_penalty_keeps_its_average_weight():
    """gp_every = k computes the penalty on steps 0, k, 2k, ... with weight k * gp_weight: over any k steps it
    weighs what k plain WGAN-GP steps do."""
    plain, lazy = TINY, dataclasses.replace(TINY, gp_every=4)
    assert [gan.penalty_weight(plain, s) for s in range(4)] == [10.0] * 4
    assert [gan.penalty_weight(lazy, s) for s in range(8)] == [40.0, 0, 0, 0, 40.0, 0, 0, 0]


def test_lazy_fit_computes_the_penalty_on_every_kth_critic_step(weak_model, train_set, monkeypatch):
    calls = []
    real_gp = gan.gradient_penalty

    def counted(*args, **kwargs):
        calls.append(1)
        return real_gp(*args, **kwargs)

    monkeypatch.setattr(gan.fit, "gradient_penalty", counted)
    settings = dataclasses.replace(TINY, gp_every=4)  # 1,280 images in batches of 32: 40 critic steps
    _, hist = gan.fit_layer(weak_model, "fc3", train_set.subset(600, seed=3), settings, progress=False, exact=True)
    assert len(calls) == 10
    assert all(np.isfinite(hist["gp"])) and all(np.isfinite(hist["loss_d"]))


def test_phase_schedule_of_a_warm_start_has_no_fade_in():
    s = gan.GANSettings(images=(0, 0, 0, 400))
    assert gan.phase_at(s, 0) == (3, 1.0) and gan.phase_at(s, 200) == (3, 1.0)
    s = gan.GANSettings(images=(0, 0, 100, 400))
    assert gan.phase_at(s, 0) == (2, 1.0) and gan.phase_at(s, 100) == (3, 0.0) and gan.phase_at(s, 200) == (3, 0.5)


def test_balanced_sampler_draws_each_class_equally_often_and_is_a_function_of_the_step(train_set):
    from interpretgan.data import ImageSet
    # a skewed set: 900 zeros, 100 ones
    idx = torch.cat([torch.nonzero(train_set.labels == 0).flatten()[:900],
                     torch.nonzero(train_set.labels == 1).flatten()[:100]])
    skewed = train_set.take(idx)
    settings = gan.GANSettings(batch_size=100, balanced=True, flip=True)
    batch_at = gan.fit._sampler(skewed, settings, seed=4)
    drawn = torch.cat([batch_at(100 * k, k)[0] for k in range(200)])
    share_ones = float((skewed.labels[drawn] == 1).double().mean())
    assert share_ones == pytest.approx(0.5, abs=0.02)  # 20,000 draws: sd 0.0035
    i1, f1 = batch_at(500, 5)
    i2, f2 = gan.fit._sampler(skewed, settings, seed=4)(500, 5)
    assert torch.equal(i1, i2) and torch.equal(f1, f2)  # what a resumed fit draws
    assert 30 < int(f1.sum()) < 70
    # without it: shuffled epochs, every image once per epoch, no flips
    plain = gan.fit._sampler(skewed, dataclasses.replace(settings, balanced=False, flip=False), seed=4)
    epoch = torch.cat([plain(100 * k, k)[0] for k in range(10)])
    assert sorted(epoch.tolist()) == list(range(1000)) and plain(0, 0)[1] is None
    x = torch.rand(4, 3, 2, 5)
    flipped = gan.fit._flipped(x, torch.tensor([True, False, True, False]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_new_settings_leave_earlier_cache_keys_unchanged():
    plain = gan.GANSettings()
    assert set(plain.as_dict()) == {f.name for f in dataclasses.fields(plain)} - set(gan.GANSettings.LATER_FIELDS)
    asked = dataclasses.replace(plain, augment=("translation",), balanced=True, distill_images=640).as_dict()
    assert asked["augment"] == ["translation"] and asked["balanced"] is True and asked["distill_images"] == 640


def test_warm_start_takes_the_priors_generator_and_learns_its_codes(weak_model, train_set, test_set):
    settings = dataclasses.replace(TINY, images=(0, 0, 0, 64), distill_images=3_200)
    tr = train_set.subset(600, seed=3)
    prior, _ = gan.fit_layer(weak_model, "conv2", tr, TINY, seed=5, progress=False, exact=True)
    x, _ = test_set.subset(64, seed=1).tensors()
    torch.manual_seed(0)
    nets = gan.fit._build_nets(latent_shapes(SmallCNN())["conv4"], 1, settings, torch.device("cpu"), exact=True)
    mse = gan.warm_start(nets, weak_model, "conv4", prior, tr, settings, seed=0, device=torch.device("cpu"), exact=True)
    for a, b in zip(nets.G_ema.state_dict().values(), prior.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert mse[-1] < 0.5 * mse[0]  # C learns the prior's codes
    with torch.no_grad():
        want = prior.compression(gan.latent_of(weak_model, x, "conv2"))
        nets.C_ema.eval()
        got = nets.C_ema(gan.latent_of(weak_model, x, "conv4"))
    assert F.mse_loss(got, want) < 0.5 * F.mse_loss(torch.zeros_like(want), want)
    # the whole fit with a prior: its history records the warm-up; a mismatched prior is refused
    expl, hist = gan.fit_layer(weak_model, "conv4", tr, settings, seed=0, progress=False, exact=True, prior=prior)
    assert len(hist["distill_mse"]) == 10 and hist["images"][-1] == 64
    with pytest.raises(ValueError, match="does not fit"):
        gan.fit_layer(weak_model, "conv4", tr, dataclasses.replace(settings, code_dim=16), progress=False, exact=True,
                      prior=prior)
