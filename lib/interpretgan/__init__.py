"""interpretgan: reproduction package for *Understanding and Diagnosing Vulnerability under
Adversarial Attacks* (Zheng, Zhang, Lee, Prakash).

The modules, bottom layer first (each imports only from the lines above it; a test checks it):

- ``paths`` (repository, data, artifact and weights folders), ``progress`` (progress bars), ``fast`` (the fast path: mixed precision,
  channels-last, threads), ``cache`` (cache keys, atomic writes, safe loading, shipped weights);
- ``data`` (MNIST at 32x32, CIFAR-10, in-memory image sets), ``models`` (the paper's classifiers with a
  pooling switch, split at any layer; the judges' architectures; ``eval_mode``, ``freeze``);
- ``attacks`` (FGSM, PGD, M-PGD; attack names; accuracy), ``training`` (natural and ATTA-1 + TRADES
  training, resumable, DDP), ``augment`` (differentiable augmentation for the critic), ``gan`` (InterpretGAN, a
  package: ``networks``, ``explainer``, ``losses``, ``fit``; any square side, warm starts from a prior);
- ``profiles`` (smoke, default, paper), ``params`` (notebook parameters, checked at the notebook edge);
- ``zoo`` (classifiers, adversarial sets, explainers and judges through the artifact cache);
- ``quality`` (explanations judged by a panel, Fréchet distances, instance fidelity), ``robustness`` (the
  pooling study), ``attribution`` (Captum baselines);
- ``user_model`` (your own network: a factory from a file or module, its weights, checks, its layers, images at
  its side); ``diagnosis`` (Acc_i / Vul_i, the controls, the max-pool study, the scaling curve, layers fitted in
  parallel, your model's diagnosis); ``table3`` (each shipped CIFAR-10 model's evaluation on every test image,
  recorded beside its weights; the README's Table 3 from the records);
- ``plots`` and ``interactive`` (figures and widgets); ``bench`` (``make bench``), ``reproduce``
  (``make reproduce``), ``distributed`` (ATTA under torchrun), ``diagnose`` (your model's diagnosis from the
  command line, layers fitted in parallel under torchrun).

The notebooks in ``notebooks/`` call these and show the results.
"""

__version__ = "0.1.0"
