"""The `pulse` command. Thin: validates input, loads the model once, hands over to the runner.

torch and the model code are imported inside the commands so that `--help` answers at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from .console import FAILED, INTERRUPTED, err_console, fail
from .weights import weights_app

app = typer.Typer(
    name="pulse",
    help="Batch PULSE face depixelizer: invents a high-resolution face that downscales to each small input.\n\n"
         "The result is a plausible face produced by a generator trained on FFHQ, never a recovery of "
         "the real person.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class UsageError(Exception):
    """A bad argument or environment found before any work: one line, exit code 2."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pulse {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Batch PULSE face depixelizer."""


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


UPSAMPLE_HELP = """Upsample every face crop in IN into OUT.

For each image it writes [bold]OUT/<relative path>.png[/] (the result at the generator's resolution),
[bold]OUT/logs/<relative path>.jsonl[/] (one line per optimisation step) and one line in
[bold]OUT/results.jsonl[/]. Rerunning skips inputs that are done.

Exit codes: 0 every input has its outputs; 1 an input failed (or, with --strict, did not converge);
2 usage error (bad IN/OUT, checkpoint or option value).

[bold]Examples[/]

  pulse upsample crops/ out/ --checkpoint weights/synthesis.pt

  pulse upsample crops/ out/ --recursive --batch-size 4 --samples 3 --seed 7

  pulse upsample crops/ out/ --json --quiet | jq .failed

  pulse upsample crops/ out/ --samples 6 --sheet     # see how many faces fit one crop
"""


def _parse_noise_layers(spec: str) -> tuple[int, ...]:
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return ()
    if spec == "last":
        return (-1,)
    try:
        return tuple(int(part) for part in spec.replace(",", ".").split(".") if part)
    except ValueError:
        raise UsageError(f"--bad-noise-layers {spec!r}: use 'last', 'none' or indices like 17 or 16.17") from None


def _parse_batch_size(text: str) -> int:
    """A positive count, or 0 for 'auto' (decided once the model is loaded)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--batch-size {text!r}: use a whole number of at least 1, or 'auto'")
    return value


def _check_in_dir(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise UsageError(f"input {path} is not readable")


def _check_out_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"output {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".pulse-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {path} is not writable ({exc.strerror or exc})") from None


def _find_checkpoint(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint to use and how it was chosen."""
    from ..weights.local import find_default_checkpoint
    from ..weights.locations import weights_search_dirs

    if explicit is not None:
        if not explicit.exists():
            raise UsageError(f"checkpoint {explicit} does not exist")
        if explicit.is_file() and not os.access(explicit, os.R_OK):
            raise UsageError(f"checkpoint {explicit} is not readable")
        return explicit, "given"
    searched = weights_search_dirs()
    found = find_default_checkpoint(searched)
    if found is None:
        where = ", ".join(str(p) for p in searched)
        raise UsageError(f"no checkpoint found (looked in {where}); pass --checkpoint PATH or set "
                         f"PULSE_CHECKPOINT (see the README's 'Weights' section)")
    return found, f"found in {found.parent}"


@app.command(help=UPSAMPLE_HELP, no_args_is_help=True)
def upsample(
    in_dir: Annotated[Path, typer.Argument(metavar="IN", help="Folder of small square face crops (or one image).",
                                           show_default=False)],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for results, logs and results.jsonl.",
                                            show_default=False)],
    checkpoint: Annotated[Path | None, typer.Option(
        envvar="PULSE_CHECKPOINT", show_envvar=True,
        help="Generator checkpoint, any supported format (PULSE's synthesis.pt with mapping.pt / gaussian_fit.pt "
             "beside it, NVIDIA's StyleGAN v1/v2 pickles, rosinality .pt, our .safetensors; see 'pulse weights') "
             "or a folder holding one. Default: the installed FFHQ model in ./weights/ or the user cache.")] = None,
    gaussian_fit: Annotated[Path | None, typer.Option(
        help="PULSE's gaussian_fit.pt. Default: beside the checkpoint, else computed once and cached.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[str, typer.Option(help="Images optimised together: a number, or 'auto' (1 on a CPU, "
                                                 "where batching buys nothing per image; on a GPU as many "
                                                 "as fit in free memory).")] = "auto",
    seed: Annotated[int, typer.Option(help="Base seed; each image's start derives from it and its path.")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps per image.")] = 100,
    eps: Annotated[float, typer.Option(min=0.0, help="Target L2 at input resolution: below it a result counts "
                                                      "as converged.")] = 2e-3,
    loss: Annotated[str, typer.Option(help="Loss as WEIGHT*NAME terms joined by '+'; names L2, L1, GEOCROSS.")]
    = "100*L2+0.05*GEOCROSS",
    lr: Annotated[float, typer.Option(help="Base learning rate (> 0).")] = 0.4,
    lr_schedule: Annotated[LrSchedule, typer.Option(help="Learning-rate schedule.")] = LrSchedule.linear1cycledrop,
    optimizer: Annotated[OptimizerName, typer.Option(help="Optimiser (run on spheres).")] = OptimizerName.adam,
    noise_type: Annotated[NoiseType, typer.Option(help="How noise inputs are treated.")] = NoiseType.trainable,
    trainable_noise_layers: Annotated[int, typer.Option(min=0, help="With trainable noise: how many of the "
                                                                    "lowest noise layers are optimised.")] = 5,
    bad_noise_layers: Annotated[str, typer.Option(help="Noise layers set to zero: 'last', 'none' or indices "
                                                       "joined by '.' (PULSE's 17 is the last at 1024).")] = "last",
    tile_latent: Annotated[bool, typer.Option("--tile-latent", help="One latent for all layers instead of W+.")]
    = False,
    samples: Annotated[int, typer.Option(min=1, help="Independent results per input (different faces).")] = 1,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders (mirrored in OUT).")]
    = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs exist.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any result did not reach eps.")] = False,
    synthesis: Annotated[SynthesisPath, typer.Option(help="How the generator is evaluated: 'fast' (same "
                                                          "function, ~3.5x faster on a CPU, numbers equal to "
                                                          "~1e-4), 'reference' (the original's op sequence), "
                                                          "or 'auto' (fast where verified: the CPU).")]
    = SynthesisPath.auto,
    stop_at_eps: Annotated[bool, typer.Option("--stop-at-eps", help="Stop an image at its first iterate that "
                                                                   "meets eps; the next input takes its place "
                                                                   "in the batch.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    sheet: Annotated[bool, typer.Option("--sheet", help="Contact sheets: OUT/sheets/<rel>.png per input (input, "
                                                       "bicubic, every result and its downscale) and OUT/sheet.png "
                                                       "for the run.")] = False,
    save_latents: Annotated[bool, typer.Option("--save-latents", help="Save each result's latents and noise as "
                                                                     "OUT/<rel>.latents.safetensors (see "
                                                                     "'pulse render').")] = False,
    save_every: Annotated[int | None, typer.Option(min=1, help="Write the current image every K steps to "
                                                               "OUT/frames/<rel>/.", show_default=False)] = None,
    animate: Annotated[bool, typer.Option("--animate", help="Write OUT/<rel>.search.gif of the search "
                                                           "converging.")] = False,
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", help="Label every PNG as synthetic "
                                                                            "(XMP digital source type + text "
                                                                            "chunks with provenance).")] = True,
) -> None:
    try:
        _check_in_dir(in_dir)
        _check_out_dir(out_dir)
        checkpoint_path, how = _find_checkpoint(checkpoint)
        if gaussian_fit is not None and not gaussian_fit.is_file():
            raise UsageError(f"gaussian fit {gaussian_fit} does not exist")
        from ..device import resolve_device
        from ..run.runner import RunOptions, plan_jobs
        from ..search.pulse import SearchConfig

        config = SearchConfig(loss=loss, eps=eps, steps=steps, lr=lr, lr_schedule=lr_schedule.value,
                              optimizer=optimizer.value, noise_type=noise_type.value,
                              trainable_noise_layers=trainable_noise_layers,
                              bad_noise_layers=_parse_noise_layers(bad_noise_layers), tile_latent=tile_latent)
        try:
            config.validate()
            torch_device = resolve_device(device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        options = RunOptions(batch_size=_parse_batch_size(batch_size), samples=samples, seed=seed, overwrite=overwrite,
                             recursive=recursive, metadata=metadata, save_latents=save_latents,
                             save_every=save_every, animate=animate, sheet=sheet, stop_at_eps=stop_at_eps)
        jobs = plan_jobs(in_dir, out_dir, options)
    except UsageError as exc:
        raise fail(str(exc)) from None

    if not quiet:
        if how != "given":
            err_console.print(f"using checkpoint {checkpoint_path} ({how})")
        todo = sum(not j.done for j in jobs)
        err_console.print(f"{len(jobs)} image(s) in {in_dir}, {len(jobs) - todo} already done; "
                          f"device {torch_device}")
    if not jobs:
        err_console.print(f"[yellow]warning:[/] no images found in {in_dir}"
                          + ("" if recursive else " (use --recursive for sub-folders)"), markup=True)

    summary = _run(jobs, in_dir, out_dir, checkpoint_path, gaussian_fit, config, options, torch_device, quiet,
                   fast={"auto": None, "fast": True, "reference": False}[synthesis.value])
    if not quiet:
        _print_summary_table(summary)
    if json_summary:
        typer.echo(json.dumps(_summary_object(summary, out_dir)))
    failed = summary.counts["failed"] > 0 or (strict and summary.counts["not_converged"] > 0)
    raise typer.Exit(FAILED if failed else 0)


def _run(jobs, in_dir, out_dir, checkpoint_path, gaussian_fit, config, options, device, quiet, fast):
    from ..checkpoints.io import CheckpointError
    from ..device import auto_batch_size, configure_cpu_allocator
    from ..engine import load_generator
    from ..run.runner import Runner
    from .progress import TerminalReporter

    reporter = TerminalReporter(err_console, quiet=quiet)
    try:
        generator = None
        if any(not j.done for j in jobs):
            if device.type == "cpu":
                configure_cpu_allocator()
            try:
                generator = load_generator(checkpoint_path, device, gaussian_fit=gaussian_fit,
                                           notify=None if quiet else reporter.note, fast=fast)
            except CheckpointError as exc:
                raise fail(str(exc)) from None
            try:
                config.zeroed_noise_layers(len(generator.noise_shapes(1)))
            except ValueError as exc:
                raise fail(str(exc)) from None
            if options.batch_size == 0:
                options = dataclasses.replace(options, batch_size=auto_batch_size(
                    device, family=generator.family, resolution=generator.resolution))
                if not quiet:
                    reporter.note(f"batch size {options.batch_size} (auto)")
        return Runner(generator, out_dir, config=config, options=options, device=device,
                      reporter=reporter, checkpoint=checkpoint_path).run(jobs)
    except KeyboardInterrupt:
        reporter.close()
        err_console.print("interrupted: finished outputs are kept; rerun the same command to resume")
        raise typer.Exit(INTERRUPTED) from None


def _summary_object(summary, out_dir: Path) -> dict[str, Any]:
    return {
        "total": summary.total,
        **summary.counts,
        "seconds": round(summary.seconds, 3),
        "out": str(out_dir),
        "results": str(out_dir / "results.jsonl"),
    }


def _print_summary_table(summary) -> None:
    from rich.table import Table

    table = Table(title="pulse upsample", show_edge=False)
    for column in ("ok", "not converged", "failed", "skipped", "total", "seconds"):
        table.add_column(column, justify="right")
    c = summary.counts
    table.add_row(str(c["ok"]), str(c["not_converged"]), str(c["failed"]), str(c["skipped"]),
                  str(summary.total), f"{summary.seconds:.1f}")
    err_console.print(table)


@app.command("render", no_args_is_help=True)
def render_command(
    latents: Annotated[Path, typer.Argument(help="A .latents.safetensors file from --save-latents.")],
    out: Annotated[Path, typer.Argument(help="PNG to write.")],
    checkpoint: Annotated[Path | None, typer.Option(
        envvar="PULSE_CHECKPOINT", show_envvar=True,
        help="Generator checkpoint. Default: the one recorded in the latents file.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps. Bit-for-bit on the device the "
                                             "result was made on.")] = "cpu",
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", help="Label the PNG as synthetic.")] = True,
) -> None:
    """Re-render a saved result from its latents and noise (same device: bit for bit)."""
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import load_networks
    from ..device import resolve_device
    from ..files.atomic import sha256_file
    from ..files.images import save_png
    from ..files.latents import LatentsError, load_latents
    from ..files.metadata import result_metadata
    from ..search.pulse import render

    try:
        ws, noise, info = load_latents(latents)
        torch_device = resolve_device(device)
        path = checkpoint if checkpoint is not None else Path(info.get("checkpoint", ""))
        if not str(path) or not path.exists():
            raise UsageError(f"checkpoint {path} recorded in {latents} not found; pass --checkpoint")
        loaded = load_networks(path)
        digest = sha256_file(loaded.path)
        if info.get("checkpoint_sha256") and info["checkpoint_sha256"] != digest:
            raise UsageError(f"{latents} was made with a checkpoint of sha256 {info['checkpoint_sha256'][:12]}…, "
                             f"but {loaded.path} has {digest[:12]}…")
        G = loaded.generator.to(torch_device).use_fast_path(info.get("synthesis_path", "reference") == "fast")
        if tuple(ws.shape) != (G.num_ws, G.w_dim) or len(noise) != len(G.noise_shapes(1)):
            raise UsageError(f"{latents} does not fit this generator ({G.num_ws}x{G.w_dim} latents, "
                             f"{len(G.noise_shapes(1))} noise layers)")
    except (UsageError, LatentsError, CheckpointError, ValueError) as exc:
        raise fail(str(exc)) from None
    image = render(G, ws[None].to(torch_device), [n[None].to(torch_device) for n in noise])[0]
    text = None
    if metadata:
        text = result_metadata(checkpoint=loaded.path.name, checkpoint_sha256=digest,
                               seed=int(info.get("seed", -1)), image_seed=int(info.get("image_seed", -1)),
                               steps=int(info.get("steps", -1)), l2=float(info.get("l2", "nan")),
                               status=info.get("status", "unknown"), input_sha256=info.get("input_sha256", ""))
    try:
        save_png(image, out, text=text)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {out}")


@app.command("demo-generator")
def demo_generator(
    folder: Annotated[Path, typer.Argument(help="Where to write synthesis.pt and mapping.pt.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write the small untrained demo StyleGAN (PULSE layout): shows the mechanics, not faces."""
    from ..checkpoints.demo import write_demo_checkpoint

    try:
        path = write_demo_checkpoint(folder, seed)
    except OSError as exc:
        raise fail(f"cannot write {folder}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {path} (untrained demo generator)")


app.add_typer(weights_app, name="weights")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED)
