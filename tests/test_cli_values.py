"""The plain reading of command-line values (pulse_cli/cli/values.py) against Typer's own.

Every parameter of every command, read both ways from the same values (what a shell can pass, the
parameter's default, and values Typer is given by code): the same result of the same type, or the same
error with the same message. And the point of it: good values of every option are read without importing
pydantic (tests/test_first_hour.py: nor do argument errors).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, get_origin

import pytest
import typer
from helpers import pulse_in_a_fresh_process
from typer._click import Context
from typer._click.exceptions import ClickException
from typer._coercion import build_runtime_param

from pulse_cli.cli import app, values
from pulse_cli.cli.values import PlainValue

WORDS = ["abc", "", " ", "x", "auto", "yes", "true", "-", "+", "_", "e", "E", "none", "ten", "one", "\x1b[31m",
         "inf", "INF", "-Infinity", "i_nf", "\tinf\n", "nan", "+nan", "NaN", "infinit", "\uff49\uff4e\uff46"]
INTS = ["0", "1", "-1", "+5", "007", "2", "999999", "1000000", "1000001", "99999999999999999999", " 3", "3 ",
        "3.0", "3.5", "1_000", "1e3", "E5", "0x10", "3.0e0", "1E0", "-1e2", "3.00", "-3.0", "007.0", ".0", "0.",
        "1.50", "2.50", ".5", "5.", "-0.5", "+1.5", "00.5", "0.5e1", "999999999999999999.5", "1." + "0" * 29 + "1",
        "\u0663", "-0", *WORDS, 0, 5, 3.0, 2.5, None]
FLOATS = ["0", "1", "1.0", "1.5", "2", "-0.5", ".5", "5.", "1e-3", "1E+2", "2e0", "00.5", "+.5e-1", "-inf",
          "1e999", "0x1", "1_0", " 1", "1e", "1.2.3", "E5", *WORDS, 0, 1, 2, 0.5, float("nan"), None]
STRS = ["x", "", "a b", "\x1b[31mred", "3*L3", None, 5]
BOOLS = [True, False, None, "yes", "0", ""]
PATHS = ["a", "", ".", "..", "~/x", "a/b.png", "-", Path("x"), None, 5, "a\0b"]


def _commands() -> list[tuple[str, Any]]:
    found = []

    def walk(command: Any, path: str) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "pulse")
    return found


def _parameters() -> list[tuple[str, Any, Any]]:
    params = []
    for path, command in _commands():
        ctx = Context(command, info_name=path)
        for param in [*command.params, command.get_help_option(ctx)]:
            if param is not None:
                params.append((f"{path} {param.name}", command, param))
    return params


PARAMETERS = _parameters()


def _values(annotation: Any, default: Any, existing: list[str]) -> list[Any]:
    if get_origin(annotation) is list:
        return [("a", "b"), [], ("",), "a", None, ("a", 5), tuple(existing), ("a", "\x1b[0m")]
    if annotation is int:
        return [*INTS, default]
    if annotation is float:
        return [*FLOATS, default]
    if annotation is str:
        return [*STRS, default]
    if annotation is bool:
        return [*BOOLS, default]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        names = [member.value for member in annotation]
        return [*names, *list(annotation), names[0].upper(), f" {names[0]}", "bad", "", "\x1bbad", None, 5, default]
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return [*PATHS, *existing, default]
    raise AssertionError(f"no test values for {annotation!r}")


def _outcome(read: Any, value: Any, param: Any, ctx: Any) -> tuple[Any, ...]:
    try:
        result = read.coerce(value, param=param, ctx=ctx)
    except ClickException as exc:
        return ("refused", type(exc).__name__, exc.format_message())
    except Exception as exc:  # noqa: BLE001 - whatever it is, both readings must raise it alike
        return ("raised", type(exc).__name__, str(exc))
    if isinstance(result, (list, tuple)):
        return ("read", type(result), [(type(item), repr(item)) for item in result])
    return ("read", type(result), repr(result))  # repr: nan is nan


def test_every_parameter_of_every_command_is_read_plainly() -> None:
    """All of them: a parameter left to Typer would bring pydantic back on every run of its command."""
    for name, _command, param in PARAMETERS:  # as the commands were built
        assert isinstance(param._runtime_param, PlainValue), name


@pytest.mark.parametrize(("name", "command", "param"), PARAMETERS, ids=[p[0] for p in PARAMETERS])
def test_plain_reading_agrees_with_typer(name: str, command: Any, param: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file.png").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    existing = [str(tmp_path / "file.png"), str(tmp_path / "folder")]
    descriptor = param.type_descriptor
    typer_reading = build_runtime_param(descriptor)
    param._runtime_param = None
    values.use_plain_values(param)
    plain = param._runtime_param
    assert isinstance(plain, PlainValue)
    deferred = []
    monkeypatch.setattr(values, "build_runtime_param", lambda d: deferred.append(d) or build_runtime_param(d))
    ctx = Context(command, info_name=name)
    checked = 0
    for value in _values(descriptor.annotation, param.default, existing):
        ours, typers = _outcome(plain, value, param, ctx), _outcome(typer_reading, value, param, ctx)
        assert ours == typers, f"{name} {value!r}: plain {ours} vs Typer {typers}"
        checked += 1
    assert checked >= 6
    # most of those were read here, not handed back to Typer (else this module would not be what runs)
    assert len(deferred) < checked / 2, f"{name}: {len(deferred)} of {checked} values went to Typer"


def test_numbers_out_of_range_and_bad_choices_are_refused_without_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "build_runtime_param", lambda d: pytest.fail("handed to Typer"))
    by_name = {name: (command, param) for name, command, param in PARAMETERS}
    for name, value, message in [
        ("pulse upsample steps", "0", "Invalid value for '--steps': Input should be greater than or equal to 1"),
        ("pulse upsample steps", "1000001",
         "Invalid value for '--steps': Input should be less than or equal to 1000000"),
        ("pulse upsample eps", "2", "Invalid value for '--eps': Input should be less than or equal to 1"),
        ("pulse upsample steps", "abc",
         "Invalid value for '--steps': Input should be a valid integer, unable to parse string as an integer"),
        ("pulse upsample steps", "1.5",
         "Invalid value for '--steps': Input should be a valid integer, unable to parse string as an integer"),
        ("pulse upsample eps", "x",
         "Invalid value for '--eps': Input should be a valid number, unable to parse string as a number"),
        ("pulse upsample synthesis", "FAST",
         "Invalid value for '--synthesis': Value error, 'FAST' is not one of 'auto', 'fast', 'reference'."),
    ]:
        command, param = by_name[name]
        values.use_plain_values(param)
        ctx = Context(command, info_name=name)
        with pytest.raises(ClickException) as raised:
            param._runtime_param.coerce(value, param=param, ctx=ctx)
        assert raised.value.format_message() == message


def test_good_values_of_every_upsample_option_are_read_without_pydantic(tmp_path: Path) -> None:
    """Every option given a good value: all are read (the refusal comes after, from the command itself)."""
    (tmp_path / "crops").mkdir()
    args = ["upsample", "crops", "out", "--checkpoint", "x.safetensors", "--gaussian-fit", "fit.safetensors",
            "--steps", "50", "--eps", "0.002", "--loss", "100*L2+0.05*GEOCROSS", "--search", "pulse",
            "--lr", "0.4", "--lr-schedule", "fixed", "--optimizer", "adam", "--noise-type", "fixed",
            "--trainable-noise-layers", "5", "--bad-noise-layers", "17", "--tile-latent", "--samples", "2",
            "--seed", "3", "--stop-at-eps", "--recursive", "--overwrite", "--strict", "--quiet", "--json",
            "--no-metadata", "--sheet", "--save-latents", "--save-every", "5", "--shard", "1/2",
            "--device", "gpu", "--batch-size", "auto", "--threads", "auto", "--synthesis", "fast",
            "--ray", "127.0.0.1:1", "--workers", "2",
            "--gpus-per-worker", "0.5", "--threads-per-worker", "1"]
    outcome, stderr = pulse_in_a_fresh_process(args, tmp_path)
    assert outcome == {"code": 2, "torch": False, "pydantic": False}, stderr
    assert "unknown device 'gpu'" in stderr
