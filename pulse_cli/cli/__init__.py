"""The `pulse` command: one module per command (parse, call, print).

`main` handles signals before the commands are imported (`signals`, which imports nothing heavy); `app` (the
Typer app) is imported when first asked for.
"""

from __future__ import annotations

from .signals import run_command

__all__ = ["app", "main"]


def main() -> None:
    """The `pulse` command."""
    run_command(_load_app)


def _load_app():
    from . import app  # through __getattr__ below: the Typer app, not the module of that name

    return app


def __getattr__(name: str) -> object:
    if name == "app":
        from .app import app  # loading module `app` made `app` here that module: the Typer app takes its place

        globals()["app"] = app
        return app
    raise AttributeError(f"module 'pulse_cli.cli' has no attribute {name!r}")
