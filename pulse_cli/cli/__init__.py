"""The `pulse` command: one module per command (parse, call, print).

`main` lives in `signals`, which imports nothing heavy: it handles signals before the commands are imported.
`app` (the Typer app) is imported when first asked for.
"""

from __future__ import annotations

from .signals import main

__all__ = ["app", "main"]


def __getattr__(name: str) -> object:
    if name == "app":
        from .app import app  # loading module `app` made `app` here that module: the Typer app takes its place

        globals()["app"] = app
        return app
    raise AttributeError(f"module 'pulse_cli.cli' has no attribute {name!r}")
