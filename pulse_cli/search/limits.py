"""Bounds on the search options and the loss string's syntax: they catch typos and overflow, and sit far from
any useful value (PULSE: 100 steps, lr 0.4, weights 100 and 0.05). Free of torch, so the CLI can show them in
--help and check arguments at once."""

from __future__ import annotations

from dataclasses import dataclass

MAX_STEPS = 1_000_000
MAX_LR = 100.0
# Far below what makes a float32 loss overflow.
MAX_LOSS_WEIGHT = 1e6
MAX_SAMPLES = 1000
SEARCH_MODES = ("pulse", "robust")  # pulse: the paper's search; robust: search/robust.py

LOSS_NAMES = ("L2", "L1", "GEOCROSS")


@dataclass(frozen=True)
class LossTerm:
    weight: float
    name: str


def parse_loss(spec: str) -> tuple[LossTerm, ...]:
    """"100*L2+0.05*GEOCROSS" -> terms; raises ValueError with a one-line reason."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        weight, sep, name = part.partition("*")
        if not sep:
            raise ValueError(f"loss term {part!r} must look like WEIGHT*NAME, e.g. 100*L2")
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; known: {', '.join(LOSS_NAMES)}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"loss weight {weight!r} in {spec!r} is not a number") from None
        if not 0 < value <= MAX_LOSS_WEIGHT:  # also refuses nan and inf
            raise ValueError(f"loss weight {weight!r} in {spec!r} must be a number above 0 and at most "
                             f"{MAX_LOSS_WEIGHT:g}")
        terms.append(LossTerm(value, name))
    if not any(t.name in ("L2", "L1") for t in terms):
        raise ValueError(f"loss {spec!r} needs an L2 or L1 term, or nothing ties the result to the input")
    return tuple(terms)


def check_numbers(*, steps: int, eps: float, lr: float) -> None:
    """The numeric search options in range (nan and inf refused); ValueError with a one-line reason."""
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be from 1 to {MAX_STEPS:,}, got {steps}")
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must be from 0 to 1 (a mean squared error of pixels in [0, 1]), got {eps}")
    if not 0 < lr <= MAX_LR:
        raise ValueError(f"lr must be above 0 and at most {MAX_LR:g}, got {lr}")
