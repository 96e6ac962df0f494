"""Whether the 'ray' extra is installed, known without importing Ray or the run code (torch): an argument
error with `--ray` is refused at once."""

from __future__ import annotations

from importlib.util import find_spec

RAY_MODULES = ("ray", "pyarrow", "pandas")  # Ray Data needs the other two


def ray_available() -> bool:
    return all(find_spec(name) is not None for name in RAY_MODULES)
