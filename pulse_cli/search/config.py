"""The search's options (`SearchConfig`), apart from the loop that uses them (search/pulse.py) and robust
mode's levers (search/robust.py), so those two modules need not import each other."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields, replace

from .limits import SEARCH_MODES, check_numbers
from .losses import LossTerm, parse_loss
from .optim import LR_SCHEDULES, OPTIMIZERS

NOISE_TYPES = ("trainable", "fixed", "zero")
DEFAULT_LOSS = "100*L2+0.05*GEOCROSS"  # PULSE's
# Options that act on W+ rows or noise inputs: they mean nothing for a generator with one Gaussian latent (DCGAN).
W_PLUS_OPTIONS = ("noise_type", "trainable_noise_layers", "bad_noise_layers", "tile_latent")


def option_name(field_name: str) -> str:
    """A SearchConfig field as the command line spells it ("noise_type" -> "--noise-type")."""
    return "--" + field_name.replace("_", "-")


def _loss_spec(terms: tuple[LossTerm, ...]) -> str:
    return "+".join(f"{t.weight:g}*{t.name}" for t in terms)


@dataclass(frozen=True)
class SearchConfig:
    """PULSE's hyper-parameters; the defaults are the paper's.

    `mode="pulse"` is the paper's search; `mode="robust"` adds `RobustOptions` (see search/robust.py).
    """

    loss: str = DEFAULT_LOSS
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
        check_numbers(steps=self.steps, eps=self.eps, lr=self.lr)
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

    def check_generator(self, num_noise_layers: int, latent_kind: str = "w+") -> None:
        """The options that depend on the generator: noise layer indices and counts; for a Gaussian latent,
        no GEOCROSS and the W+/noise options at their defaults (see `for_latent`)."""
        if latent_kind == "gaussian":
            self._check_gaussian(given=())
            return
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

    def for_latent(self, latent_kind: str, given: Collection[str] = ()) -> SearchConfig:
        """These options as they apply to a generator whose latent is `latent_kind` ("w+" or "gaussian").

        For a Gaussian latent (one z, no noise inputs) PULSE's default loss loses its GEOCROSS term (the
        spread of W+ rows: one z has none). A ValueError names what cannot apply: GEOCROSS in any other loss,
        or a W+/noise option changed from its default, or named in `given` (options the user set explicitly,
        by field name) even at its default value.
        """
        if latent_kind != "gaussian":
            return self
        config = self
        if self.loss == DEFAULT_LOSS and "loss" not in given:
            config = replace(self, loss=_loss_spec(tuple(t for t in parse_loss(self.loss) if t.name != "GEOCROSS")))
        config._check_gaussian(given)
        return config

    def _check_gaussian(self, given: Collection[str]) -> None:
        if any(t.name == "GEOCROSS" for t in parse_loss(self.loss)):
            raise ValueError(f"--loss {self.loss}: GEOCROSS has no meaning for a generator with one Gaussian latent "
                             f"(DCGAN: no W+ rows to keep together); use e.g. --loss 100*L2")
        defaults = SearchConfig()
        for f in fields(self):
            if f.name in W_PLUS_OPTIONS and (f.name in given or getattr(self, f.name) != getattr(defaults, f.name)):
                raise ValueError(f"{option_name(f.name)} has no meaning for a generator with one Gaussian latent "
                                 f"(DCGAN: no W+ rows, no noise inputs); leave it out")
