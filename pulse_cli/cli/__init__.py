"""The `pulse` command: one module per command (parse, call, print)."""

from .app import app, main

__all__ = ["app", "main"]
