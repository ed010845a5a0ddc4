"""InterpretGAN (paper Section 3): per-layer explanation generators.

Who should use it: ``03_fit_interpretgan`` and everything that explains a layer (``04``, ``05``). For a
classifier split at a layer, f = f_post o f_pre with latent l = f_pre(x), a compression network C and a
generator G produce the explanation x_hat = G(C(l)). A discriminator D makes x_hat follow the data
distribution, and the interpretability term L_I (equation 3) makes it carry what f uses to classify:

    min_{G, C} max_D  V(D, G) - lambda * L_I(G),   L_I = E_{y ~ f(x)} [log p_f(y | x_hat)]

so G's loss is its adversarial loss plus lambda times the cross-entropy between f's predicted
distribution on x and f's prediction on x_hat (L_I up to the constant H(y)). G's only input is C(l):
there is no noise vector.

The generator is a progressive GAN (Karras et al. 2018, the paper's ref [24]): 4 scales (4x4 ... 32x32) for
MNIST, 5 or 6 (to 64x64 or 128x128) for CelebA,
2 convolutions per scale joined by nearest upsampling, each new scale faded in; the discriminator
mirrors it with average-pool downsampling and a minibatch-standard-deviation feature. Progressive
GAN's recipe: WGAN-GP with the drift term, Adam (lr 0.001, betas (0, 0.99)), equalised learning rate,
pixel-wise normalisation, and an exponential moving average (EMA) of the generator's (and the
compression network's) weights, used for every explanation shown or scored.

Where things are (a package, read in this order): :mod:`~interpretgan.gan.networks` (C, G, D),
:mod:`~interpretgan.gan.explainer` (a fitted explainer; the latent of a layer), :mod:`~interpretgan.gan.losses`
(L_I, the latent-matching term, the gradient penalty) and :mod:`~interpretgan.gan.fit` (the settings and the
resumable fitting loop). Everything public is importable from ``interpretgan.gan`` itself.

Example::

    >>> expl = fit_layer(model, "conv2", train_set, GANSettings(), checkpoint="c.pt")
    >>> x_hat = expl(x)             # explanations in [0, 1], same shape as x
"""
from .explainer import (Explainer, build_explainer, explain_layers, explainer_state, explanation_accuracy,
                        latent_and_logits, latent_of, to_unit)
from .fit import (GANSettings, critic_step, fit_layer, generator_step, phase_at, real_images, save_grid, train_step,
                  warm_start)
from .losses import gradient_penalty, interpretability_loss, latent_match_loss, penalty_weight
from .networks import (RESOLUTIONS, CompressionNet, Discriminator, EqualizedConv2d, EqualizedLinear, Generator,
                       MinibatchStd, PixelNorm, resolution, scales_for)

__all__ = ["CompressionNet", "Discriminator", "EqualizedConv2d", "EqualizedLinear", "Explainer", "GANSettings",
           "Generator", "MinibatchStd", "PixelNorm", "RESOLUTIONS", "build_explainer", "critic_step",
           "explain_layers", "explainer_state", "explanation_accuracy", "fit_layer", "generator_step",
           "gradient_penalty", "interpretability_loss", "latent_and_logits", "latent_match_loss", "latent_of",
           "penalty_weight", "phase_at", "real_images", "resolution", "save_grid", "scales_for", "to_unit", "train_step",
           "warm_start"]
