"""interpretgan: reproduction package for *Understanding and Diagnosing Vulnerability under
Adversarial Attacks* (Zheng, Zhang, Lee, Prakash).

Read the modules top to bottom in this order: ``data`` (MNIST at 32x32), ``models`` (the paper's
classifier, split at any layer), ``attacks`` (FGSM, PGD, M-PGD), ``training`` (natural training),
``cache`` and ``zoo`` (results through the artifact cache), ``params`` and ``profiles`` (notebook
parameters), ``plots``. The notebooks in ``notebooks/`` call these and show the results.
"""

__version__ = "0.1.0"
