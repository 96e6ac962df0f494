"""Bounds on the search options: they catch typos and overflow, and sit far from any useful value (PULSE:
100 steps, lr 0.4, weights 100 and 0.05). Free of torch, so the CLI can show them in --help at once."""

MAX_STEPS = 1_000_000
MAX_LR = 100.0
# Far below what makes a float32 loss overflow.
MAX_LOSS_WEIGHT = 1e6
MAX_SAMPLES = 1000
