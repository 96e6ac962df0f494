"""The search's options (`SearchConfig`), apart from the loop that uses them (search/pulse.py) and robust
mode's levers (search/robust.py), so those two modules need not import each other."""

from __future__ import annotations

from dataclasses import dataclass

from .limits import MAX_LR, MAX_STEPS
from .losses import parse_loss
from .optim import LR_SCHEDULES, OPTIMIZERS

SEARCH_MODES = ("pulse", "robust")
NOISE_TYPES = ("trainable", "fixed", "zero")


@dataclass(frozen=True)
class SearchConfig:
    """PULSE's hyper-parameters; the defaults are the paper's.

    `mode="pulse"` is the paper's search; `mode="robust"` adds `RobustOptions` (see search/robust.py).
    """

    loss: str = "100*L2+0.05*GEOCROSS"
    eps: float = 2e-3
    steps: int = 100
    lr: float = 0.4
    lr_schedule: str = "linear1cycledrop"
    optimizer: str = "adam"
    noise_type: str = "trainable"
    trainable_noise_layers: int = 5
    bad_noise_layers: tuple[int, ...] = (-1,)  # negative counts from the last layer
    tile_latent: bool = False
    mode: str = "pulse"

    def validate(self) -> None:
        """Raise ValueError with a one-line reason for any value the search cannot use (nan and inf too)."""
        parse_loss(self.loss)
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be from 1 to {MAX_STEPS:,}, got {self.steps}")
        if not 0 <= self.eps <= 1:
            raise ValueError(f"eps must be from 0 to 1 (a mean squared error of pixels in [0, 1]), got {self.eps}")
        if not 0 < self.lr <= MAX_LR:
            raise ValueError(f"lr must be above 0 and at most {MAX_LR:g}, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"unknown noise type {self.noise_type!r}; known: {', '.join(NOISE_TYPES)}")
        if self.trainable_noise_layers < 0:
            raise ValueError("trainable noise layers must be >= 0")
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {self.mode!r}; known: {', '.join(SEARCH_MODES)}")

    def check_generator(self, num_noise_layers: int) -> None:
        """The options that depend on the generator: noise layer indices and counts."""
        self.zeroed_noise_layers(num_noise_layers)
        if self.noise_type == "trainable" and self.trainable_noise_layers > num_noise_layers:
            raise ValueError(f"--trainable-noise-layers {self.trainable_noise_layers} is more than this "
                             f"generator's {num_noise_layers} noise layers")

    def zeroed_noise_layers(self, num_layers: int) -> set[int]:
        """Indices of noise layers set to zero, checked against the generator's layer count."""
        zeroed = set()
        for index in self.bad_noise_layers:
            if not -num_layers <= index < num_layers:
                raise ValueError(f"bad noise layer {index} is out of range: this generator has "
                                 f"{num_layers} noise layers (0..{num_layers - 1})")
            zeroed.add(index % num_layers)
        return zeroed
