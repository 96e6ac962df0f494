"""Where `pulse` looks for checkpoints and keeps what it computes.

Pure functions: the environment is read at call time (so tests and `PULSE_HOME=... pulse ...` both work)
and nothing is created on disk here; callers `mkdir` what they write to.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "pulse-cli"
ENV_HOME = "PULSE_HOME"


def user_dir() -> Path:
    """Per-user folder for downloaded weights: `$PULSE_HOME` if set (and non-empty), else the OS cache dir."""
    home = os.environ.get(ENV_HOME, "").strip()
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME))


def weights_search_dirs() -> list[Path]:
    """Folders searched for checkpoints, first match wins: `./weights/` (cwd), then `user_dir()`."""
    return [Path.cwd() / "weights", user_dir()]


def cache_dir() -> Path:
    """Subfolder of `user_dir()` for things `pulse` computes itself (e.g. latent statistics)."""
    return user_dir() / "computed"
