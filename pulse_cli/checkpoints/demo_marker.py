"""How the demo generator's folder is recognised without loading anything (free of torch)."""

from __future__ import annotations

from pathlib import Path

# Written beside the demo's synthesis.pt by `pulse demo-generator`.
DEMO_MARKER = "DEMO-GENERATOR.txt"
DEMO_MARKER_TEXT = ("This folder holds pulse's untrained demo generator (`pulse demo-generator`): random weights, "
                    "not faces. It shows the mechanics of the search; see `pulse weights list` for real ones.\n")
DEMO_WARNING = "demo generator: random weights, not faces (real ones: pulse weights list)"


def is_demo_checkpoint(path: Path) -> bool:
    """Whether `path` (a checkpoint file, or a folder holding one) is the demo generator's."""
    folder = path if path.is_dir() else path.parent
    return (folder / DEMO_MARKER).is_file()
