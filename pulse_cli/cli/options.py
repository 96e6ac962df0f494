"""Option types and checks shared by the commands; nothing here imports torch."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

# --help panels
MODEL, SEARCH, OUTPUT, TRANSPARENCY, PERFORMANCE = "Model", "Search", "Output", "Transparency", "Performance"


class _BareHelp:
    """--help is a flag: shown without a value placeholder (Typer's own shows `<bool>`)."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_BareHelp, TyperCommand):
    """A command whose --help shows no `<bool>` placeholder."""


class Group(_BareHelp, TyperGroup):
    """A command group whose --help shows no `<bool>` placeholder."""


def flag(*names: str, help: str, panel: str) -> Any:
    """An on/off option: shown without a value placeholder."""
    return typer.Option(*names, metavar="", help=help, rich_help_panel=panel)


# The output flags every batch command has, spelled and explained alike.
QuietFlag = Annotated[bool, flag("--quiet", "-q", panel=OUTPUT, help="Only errors on stderr.")]
JsonFlag = Annotated[bool, flag("--json", panel=OUTPUT, help="A JSON summary on stdout.")]


def options_given(ctx: typer.Context) -> set[str]:
    """Names of the parameters set on the command line or through their environment variable (not defaults)."""
    # by name: Typer may bring its own copy of click's ParameterSource enum
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return {name for name, source in sources.items()
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}


class UsageError(Exception):
    """A bad argument or environment found before any work: one line, exit code 2."""


class LrSchedule(str, Enum):
    linear1cycledrop = "linear1cycledrop"
    linear1cycle = "linear1cycle"
    fixed = "fixed"


class OptimizerName(str, Enum):
    adam = "adam"
    sgd = "sgd"
    sgdm = "sgdm"
    adamax = "adamax"


class SynthesisPath(str, Enum):
    auto = "auto"
    fast = "fast"
    reference = "reference"


class NoiseType(str, Enum):
    trainable = "trainable"
    fixed = "fixed"
    zero = "zero"


def parse_noise_layers(spec: str) -> tuple[int, ...]:
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return ()
    if spec == "last":
        return (-1,)
    try:
        return tuple(int(part) for part in spec.replace(",", ".").split(".") if part)
    except ValueError:
        raise UsageError(f"--bad-noise-layers {spec!r}: use 'last', 'none' or indices like 17 or 16.17") from None


def parse_batch_size(text: str) -> int | str:
    """A positive count, or 'auto' (decided once the model is loaded)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--batch-size {text!r}: use a whole number of at least 1, or 'auto'")
    return value


def check_input(path: Path) -> None:
    """IN is a readable folder or one readable image file."""
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise UsageError(f"input {path} is not readable")
    if not path.is_dir():
        from ..files.discovery import is_image_file

        if not is_image_file(path):
            raise UsageError(f"input {path} is neither a folder nor an image file")


def check_in_and_out(in_path: Path, out_dir: Path) -> None:
    """Refuse layouts where outputs could become inputs. OUT inside IN is fine: discovery skips it."""
    source, target = in_path.resolve(), out_dir.resolve()
    if source == target:
        raise UsageError(f"output folder {out_dir} is the input folder; choose another OUT")
    if source.is_dir() and target in source.parents:
        raise UsageError(f"input {in_path} is inside the output folder {out_dir}; choose an OUT outside it")


def check_output_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"output {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".pulse-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {path} is not writable ({exc.strerror or exc})") from None


def find_checkpoint(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint to use and how it was chosen."""
    if explicit is not None:
        if not explicit.exists():
            raise UsageError(f"checkpoint {explicit} does not exist")
        if explicit.is_file() and not os.access(explicit, os.R_OK):
            raise UsageError(f"checkpoint {explicit} is not readable")
        return explicit, "given"
    from ..weights.local import find_default_checkpoint
    from ..weights.locations import weights_search_dirs

    searched = weights_search_dirs()
    found = find_default_checkpoint(searched)
    if found is None:
        where = ", ".join(str(p) for p in searched)
        raise UsageError(f"no checkpoint found (looked in {where}); pass --checkpoint PATH or set "
                         f"PULSE_CHECKPOINT (see the README's 'Weights' section)")
    return found, f"found in {found.parent}"


def parse_shard(spec: str | None, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """`K/N` (1 <= K <= N), or `auto` / `auto/N` from a scheduler's array index: Slurm's
    SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (offset by SLURM_ARRAY_TASK_MIN), or Kubernetes'
    JOB_COMPLETION_INDEX (0-based) with the count given as `auto/N`."""
    if spec is None:
        return None
    env = os.environ if environ is None else environ
    text = spec.strip().lower()
    if text == "auto" or text.startswith("auto/"):
        count_text = text[5:] if text.startswith("auto/") else None
        if "SLURM_ARRAY_TASK_ID" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            k = int(env["SLURM_ARRAY_TASK_ID"]) - first + 1
            n = int(count_text or env.get("SLURM_ARRAY_TASK_COUNT", "0") or 0)
        elif "JOB_COMPLETION_INDEX" in env:
            k = int(env["JOB_COMPLETION_INDEX"]) + 1
            n = int(count_text or env.get("PULSE_SHARD_COUNT", "0") or 0)
        else:
            raise UsageError("--shard auto: no SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX in the environment; "
                             "use --shard K/N")
        if n < 1:
            raise UsageError("--shard auto: the shard count is unknown; give it as --shard auto/N")
    else:
        k_text, sep, n_text = text.partition("/")
        try:
            k, n = int(k_text), int(n_text)
        except ValueError:
            raise UsageError(f"--shard {spec!r}: use K/N (e.g. 2/8), auto or auto/N") from None
        if not sep:
            raise UsageError(f"--shard {spec!r}: use K/N (e.g. 2/8), auto or auto/N")
    if not 1 <= k <= n:
        raise UsageError(f"--shard {k}/{n}: K must be from 1 to N")
    return k, n
