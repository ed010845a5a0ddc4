"""Profiles: how much each notebook runs.

- ``smoke``: about a minute per notebook, for tests (data subsets, one short epoch).
- ``default``: the real reproduction on a 2-core CPU; what the committed notebooks show.
- ``paper``: the paper's exact settings (a GPU is recommended).

Where default differs from paper, the field says so in ``notes``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Profile:
    """Sizes and schedules of one profile (None means the whole split)."""

    name: str
    n_train: int | None            # training images (natural training)
    epochs: int                    # natural training epochs
    lr: float                      # initial SGD learning rate
    lr_milestones: tuple[int, ...]  # epochs after which the rate is multiplied by lr_gamma
    n_test: int | None             # test images for clean accuracy
    n_attack: int | None           # test images attacked in 02_attack
    lr_gamma: float = 0.1
    batch_size: int = 128
    eval_batch_size: int = 500
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", n_train=20_000, epochs=1, lr=0.01, lr_milestones=(), n_test=1_000, n_attack=100,
                     notes=("20,000 training images, 1 epoch; 1,000 test images; 100 attacked images",)),
    "default": Profile("default", n_train=None, epochs=10, lr=0.01, lr_milestones=(5,), n_test=None, n_attack=2_000,
                       notes=("natural training exactly as the paper (10 epochs, lr 0.01 then 0.001 after epoch 5)",
                              "attacks on a fixed random subset of 2,000 test images (paper: all 10,000)")),
    "paper": Profile("paper", n_train=None, epochs=10, lr=0.01, lr_milestones=(5,), n_test=None, n_attack=None,
                     notes=("the paper's settings: 10 epochs, lr 0.01 then 0.001; attacks on all 10,000 test images",)),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (smoke | default | paper)."""
    from .params import choice

    return PROFILES[choice("profile", name, PROFILES)]
