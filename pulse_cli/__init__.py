"""pulse-cli: batch PULSE face depixelizer (the import package of the `pulse-depixelizer` distribution)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["__version__", "Engine", "load_generator", "pulse_search", "SearchConfig", "SearchResult"]

if TYPE_CHECKING:
    from .engine import Engine, load_generator
    from .search.pulse import SearchConfig, SearchResult, pulse_search


def __getattr__(name: str) -> Any:
    # Lazy, so that `pulse --help` does not pay for importing torch.
    if name in ("Engine", "load_generator"):
        from . import engine

        return getattr(engine, name)
    if name in ("pulse_search", "SearchConfig", "SearchResult"):
        from .search import pulse

        return getattr(pulse, name)
    raise AttributeError(f"module 'pulse_cli' has no attribute {name!r}")
