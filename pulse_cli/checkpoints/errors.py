"""The one error every checkpoint problem becomes, so commands print it as a single line."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not what was expected; the message is one line."""
