"""`pulse upsample IN OUT`: parse and check the options, build the engine once, run, print the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import FAILED, INTERRUPTED, err_console, fail
from .options import (
    LrSchedule,
    NoiseType,
    OptimizerName,
    SynthesisPath,
    UsageError,
    check_input,
    check_output_folder,
    find_checkpoint,
    parse_batch_size,
    parse_noise_layers,
)

HELP = """Upsample every face crop in IN into OUT.

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
        check_input(in_dir)
        check_output_folder(out_dir)
        checkpoint_path, how = find_checkpoint(checkpoint)
        if gaussian_fit is not None and not gaussian_fit.is_file():
            raise UsageError(f"gaussian fit {gaussian_fit} does not exist")
        from ..device import resolve_device
        from ..run.plan import RunOptions, plan_jobs
        from ..search.pulse import SearchConfig

        config = SearchConfig(loss=loss, eps=eps, steps=steps, lr=lr, lr_schedule=lr_schedule.value,
                              optimizer=optimizer.value, noise_type=noise_type.value,
                              trainable_noise_layers=trainable_noise_layers,
                              bad_noise_layers=parse_noise_layers(bad_noise_layers), tile_latent=tile_latent)
        batch = parse_batch_size(batch_size)
        try:
            config.validate()
            torch_device = resolve_device(device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        options = RunOptions(samples=samples, seed=seed, overwrite=overwrite, recursive=recursive,
                             metadata=metadata, save_latents=save_latents, save_every=save_every,
                             animate=animate, sheet=sheet, stop_at_eps=stop_at_eps)
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

    summary = _run(jobs, out_dir, checkpoint_path, options, quiet=quiet, engine_options={
        "device": torch_device, "config": config, "synthesis": synthesis.value, "batch_size": batch,
        "gaussian_fit": gaussian_fit})
    if not quiet:
        _print_summary_table(summary)
    if json_summary:
        typer.echo(json.dumps(_summary_object(summary, out_dir)))
    failed = summary.counts["failed"] > 0 or (strict and summary.counts["not_converged"] > 0)
    raise typer.Exit(FAILED if failed else 0)


def _run(jobs, out_dir: Path, checkpoint: Path, options, *, quiet: bool, engine_options: dict[str, Any]):
    from ..engine import Engine
    from ..run.runner import Runner
    from .progress import TerminalReporter

    reporter = TerminalReporter(err_console, quiet=quiet)
    try:
        engine = None
        if any(not j.done for j in jobs):
            try:
                engine = Engine.load(checkpoint, notify=reporter.note, **engine_options)
            except ValueError as exc:  # CheckpointError included: the file, or an option it cannot take
                raise fail(str(exc)) from None
            if engine.batch_size_auto:
                reporter.note(f"batch size {engine.batch_size} (auto)")
        return Runner(engine, out_dir, options=options, checkpoint=checkpoint, reporter=reporter).run(jobs)
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
