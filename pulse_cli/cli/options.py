"""Option types and checks shared by the commands; nothing here imports torch."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

# --help panels
MODEL, SEARCH, ADVANCED, OUTPUT, TRANSPARENCY, PERFORMANCE = (
    "Model", "Search", "Advanced (StyleGAN)", "Output", "Transparency", "Performance")

# Click's UsageError, the class of every argument error Typer raises (a bad value, an unknown option or
# command). Typer exports only its subclass BadParameter (newer Typers build on a Click of their own, in a
# private module), so the public way to name it is BadParameter's base class, whichever Click Typer uses.
ClickUsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _BareHelp:
    """Help that reads at 80 columns, alike in every command: placeholders are upper-case words (IN, PATH, N),
    never Typer's type names (`<path>`, `<int range>`, `<bool>`); flags show none; number ranges are left to
    the help text and the error messages, so the description column keeps its width. A bad argument
    (`--steps 0`, an unknown option) is one `error:` line and exit code 2, as every other usage error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.help = reflow(self.help)  # type: ignore[has-type]
        for param in self.params:  # type: ignore[attr-defined]
            _plain_placeholder(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and getattr(self, "no_args_is_help", False):  # `pulse upsample` alone: the help, as intended
            return super().parse_args(ctx, args)  # type: ignore[misc]
        with _usage_errors_in_one_line(ctx):
            return super().parse_args(ctx, args)  # type: ignore[misc]


@contextmanager
def _usage_errors_in_one_line(ctx: Any) -> Iterator[None]:
    """Click's usage errors (a bad value, an unknown option or command) as one `error:` line, exit code 2,
    instead of a usage block and a framed box."""
    try:
        yield
    except ClickUsageError as exc:
        from .console import fail

        message = " ".join(exc.format_message().split())  # one line, whatever Click wrapped
        raise fail(f"{message} (see '{ctx.command_path} --help')", exc.exit_code) from None


def reflow(text: str | None) -> str | None:
    """Docstring paragraphs as single lines, so that Rich wraps them at the terminal's width instead of
    keeping the source's line breaks ("in" alone on a line at 80 columns). Indented paragraphs (examples)
    keep their lines."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


def _plain_placeholder(param: Any) -> None:
    """The help's placeholders (see `_BareHelp`). Typer has no public setting for an argument's type column,
    the range shown beside a bounded number or an argument's usage name: these methods of its parameters (two
    of them private) are replaced here, and nowhere else. A Typer that does not call them shows its own text
    (0.26-0.28 show number ranges); nothing else depends on them."""
    if param.metavar is None:
        param.metavar = "" if getattr(param, "is_flag", False) else (param.name or "value").upper()
    param._get_number_range_help_str = lambda: None
    if param.param_type_name == "argument":
        name, required, many = param.metavar, param.required, param.nargs != 1
        param.display_type_rich = lambda ctx: None  # the name says it: IN, LATENTS, PATH...
        # the usage line: `IN OUT`, optional ones in brackets (Typer marks required ones with braces)
        param._usage_display_name = lambda: (name if required else f"[{name}]") + ("..." if many else "")


class Command(_BareHelp, TyperCommand):
    """A command whose help reads at 80 columns (see `_BareHelp`)."""


class Group(_BareHelp, TyperGroup):
    """A command group whose help reads at 80 columns (see `_BareHelp`); an unknown command is one line."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        with _usage_errors_in_one_line(ctx):
            return super().resolve_command(ctx, args)


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


def parse_threads_option(text: str) -> int | str:
    """`--threads`: a whole number of threads, or 'auto' (decided once the model is loaded)."""
    from ..threads import MAX_THREADS, parse_threads

    try:
        return parse_threads(text)
    except ValueError:
        raise UsageError(f"--threads {text!r}: use a whole number from 1 to {MAX_THREADS}, or 'auto'") from None


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
    source, target = in_path.resolve(), out_dir.resolve()  # links followed: where the files really are
    if source == target:
        raise UsageError(f"output folder {out_dir} is the input folder; choose another OUT")
    if target in source.parents:  # a folder or a single image: either could be overwritten by results
        raise UsageError(f"input {in_path} is inside the output folder {out_dir}; choose an OUT outside it")


def check_output_folder(path: Path) -> None:
    """OUT is a writable folder, or can be made: nothing is created until every argument is accepted (the
    run makes it), so a usage error leaves no empty OUT behind."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"output {path} exists and is not a folder")
    if not path.exists():  # the folder it would be made in must take it
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"output folder {path} cannot be made: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
            raise UsageError(f"output folder {path} cannot be made: {parent} is not writable")
        return
    try:
        probe = path / f".pulse-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {path} is not writable ({exc.strerror or exc})") from None


# The folders pulse writes into below OUT (each input's files; --save-every, --sheet, --align).
TOOL_FOLDERS = ("logs", "frames", "sheets", "crops")


def check_bookkeeping(out_dir: Path) -> None:
    """OUT's bookkeeping is usable: `results.jsonl` absent or a plain writable file, `.claims` absent or a
    writable folder whose claim files are plain files, no tool folder (`TOOL_FOLDERS`) a symbolic link.
    Checked before the model loads, so a run never starts that could record nothing; each refusal says what
    to remove or fix (nothing is written through a symbolic link or special file there: OUT may be shared
    with other users)."""
    import errno
    import secrets
    import stat

    from ..files.atomic import describe_file_kind, open_regular
    from ..files.claims import CLAIM_SUFFIX, CLAIMS_FOLDER
    from ..run.records import RESULTS_FILE

    results = out_dir / RESULTS_FILE
    try:
        os.close(open_regular(results, os.O_RDWR))
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EISDIR):
            raise UsageError(f"{results} {exc.strerror}: remove or rename it (pulse writes its records "
                             f"there)") from None
        raise UsageError(f"{results} is not writable ({exc.strerror or exc})") from None
    for name in TOOL_FOLDERS:  # a link there would take every input's files out of OUT: refused at once
        if (out_dir / name).is_symlink():
            raise UsageError(f"{out_dir / name} is a symbolic link: pulse never writes through a link inside OUT; "
                             f"remove it")
    claims = out_dir / CLAIMS_FOLDER
    try:
        kind = claims.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(kind):
        raise UsageError(f"{claims} is {describe_file_kind(kind)}, not a folder: remove it (pulse keeps its "
                         f"claims there)")
    probe = claims / f".pulse-write-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{claims} is not writable ({exc.strerror or exc}); make it writable or remove "
                         f"it") from None
    with os.scandir(claims) as entries:
        for entry in entries:
            if entry.name.endswith(CLAIM_SUFFIX) and not entry.is_file(follow_symlinks=False):
                try:
                    what = describe_file_kind(entry.stat(follow_symlinks=False).st_mode)
                except FileNotFoundError:  # a claim another process just let go of
                    continue
                raise UsageError(f"{entry.path} is {what}, not a claim file: remove it")


def find_checkpoint(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint to use and how it was chosen ("given", or why the default order picked it)."""
    if explicit is not None:
        if not explicit.exists():
            raise UsageError(f"checkpoint {explicit} does not exist")
        if not explicit.is_file() and not explicit.is_dir():  # a FIFO or a device: reading it never ends well
            from ..files.atomic import describe_file_kind

            raise UsageError(f"checkpoint {explicit} is {describe_file_kind(explicit.stat().st_mode)}, not a "
                             f"file or folder")
        if explicit.is_file() and not os.access(explicit, os.R_OK):
            raise UsageError(f"checkpoint {explicit} is not readable")
        return explicit, "given"
    from ..weights.local import choose_default_checkpoint
    from ..weights.locations import weights_search_dirs

    searched = weights_search_dirs()
    found = choose_default_checkpoint(searched)
    if found is None:
        where = ", ".join(str(p) for p in searched)
        raise UsageError(f"no checkpoint found (looked in {where}); download one with `pulse weights download "
                         f"NAME` (names: `pulse weights list`), or make the untrained demo one with `pulse "
                         f"demo-generator weights/demo`; or pass --checkpoint PATH or set PULSE_CHECKPOINT")
    return found.path, found.reason()


def parse_shard(spec: str | None, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """`K/N` (1 <= K <= N), or `auto` / `auto/N` from a scheduler's array index: Slurm's
    SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (offset by SLURM_ARRAY_TASK_MIN), or Kubernetes'
    JOB_COMPLETION_INDEX (0-based) with the count given as `auto/N`."""
    if spec is None:
        return None
    env = os.environ if environ is None else environ
    text = spec.strip().lower()

    def whole(name: str, value: str | None, default: int | None = None) -> int:
        """An environment variable (or `auto/N`'s N) as a whole number, or a one-line usage error."""
        if value is None or (not value.strip() and default is not None):
            assert default is not None
            return default
        try:
            return int(value.strip())
        except ValueError:
            raise UsageError(f"--shard {spec}: {name} is {value!r}, not a whole number") from None

    if text == "auto" or text.startswith("auto/"):
        count_text = text[5:] if text.startswith("auto/") else None
        count = whole("the shard count", count_text) if count_text is not None else None
        if "SLURM_ARRAY_TASK_ID" in env:
            first = whole("SLURM_ARRAY_TASK_MIN", env.get("SLURM_ARRAY_TASK_MIN"), 0)
            k = whole("SLURM_ARRAY_TASK_ID", env["SLURM_ARRAY_TASK_ID"]) - first + 1
            n = count if count is not None else whole("SLURM_ARRAY_TASK_COUNT", env.get("SLURM_ARRAY_TASK_COUNT"), 0)
        elif "JOB_COMPLETION_INDEX" in env:
            k = whole("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"]) + 1
            n = count if count is not None else whole("PULSE_SHARD_COUNT", env.get("PULSE_SHARD_COUNT"), 0)
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
