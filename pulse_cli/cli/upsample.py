"""`pulse upsample IN OUT`: parse and check the options, build the engine once, run, print the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..search.limits import MAX_LR, MAX_SAMPLES, MAX_STEPS
from ..threads import prefer_passive_waiting
from .console import FAILED, INTERRUPTED, TERMINATED, Terminated, err_console, fail, printable, sigterm_as_interrupt
from .options import (
    MODEL,
    OUTPUT,
    PERFORMANCE,
    SEARCH,
    TRANSPARENCY,
    JsonFlag,
    LrSchedule,
    NoiseType,
    OptimizerName,
    QuietFlag,
    SynthesisPath,
    UsageError,
    check_bookkeeping,
    check_in_and_out,
    check_input,
    check_output_folder,
    find_checkpoint,
    flag,
    options_given,
    parse_batch_size,
    parse_noise_layers,
    parse_shard,
    parse_threads_option,
)

HELP = """Upsample every face crop in IN into OUT.

For each image it writes [bold]OUT/<relative path>.png[/] (the result at the generator's resolution),
[bold]OUT/logs/<relative path>.jsonl[/] (one line per optimisation step) and one line in
[bold]OUT/results.jsonl[/]. Rerunning skips inputs that are done.

Exit codes: 0 every input has its outputs; 1 an input failed (or, with --strict, did not converge);
2 usage error (bad IN/OUT, checkpoint or option value).

[bold]Examples[/]

  pulse upsample crops/ out/ --checkpoint weights/demo
  pulse upsample crops/ out/ --recursive --samples 3 --seed 7
  pulse upsample crops/ out/ --json --quiet | jq .failed

  # photos: find and align the faces first
  pulse upsample photos/ out/ --align

  # how many different faces fit one crop
  pulse upsample crops/ out/ --samples 6 --sheet
"""


def upsample(
    ctx: typer.Context,
    in_dir: Annotated[Path, typer.Argument(metavar="IN", help="Folder of small square face crops, or one image.",
                                           show_default=False)],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for results, logs and results.jsonl.",
                                            show_default=False)],
    # -- model
    checkpoint: Annotated[Path | None, typer.Option(
        envvar="PULSE_CHECKPOINT", show_envvar=True, metavar="PATH", rich_help_panel=MODEL,
        help="Generator checkpoint in any supported format, or a folder holding one (see 'pulse weights'). "
             "Default: the FFHQ model in ./weights/ or the user cache.")] = None,
    gaussian_fit: Annotated[Path | None, typer.Option(
        metavar="PATH", rich_help_panel=MODEL,
        help="PULSE's gaussian_fit.pt. Default: beside the checkpoint, else computed once and cached.")] = None,
    # -- search
    steps: Annotated[int, typer.Option(min=1, max=MAX_STEPS, metavar="N", rich_help_panel=SEARCH,
                                       help="Optimisation steps per image.")] = 100,
    eps: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="L2", rich_help_panel=SEARCH,
                                       help="Target L2 at input resolution: a result below it counts as "
                                            "converged.")] = 2e-3,
    loss: Annotated[str, typer.Option(metavar="SPEC", rich_help_panel=SEARCH,
                                      help="WEIGHT*NAME terms joined by '+'; names L2, L1, GEOCROSS (not for a "
                                           "DCGAN: its default is 100*L2).")]
    = "100*L2+0.05*GEOCROSS",
    search: Annotated[str, typer.Option("--search", metavar="NAME", rich_help_panel=SEARCH,
                                        help="pulse: PULSE as published. robust: reaches eps more often, in "
                                             "fewer steps (see the README).")] = "pulse",
    lr: Annotated[float, typer.Option(metavar="RATE", rich_help_panel=SEARCH,
                                      help=f"Base learning rate (above 0, at most {MAX_LR:g}; "
                                           "--search robust runs at twice it).")] = 0.4,
    lr_schedule: Annotated[LrSchedule, typer.Option(metavar="NAME", rich_help_panel=SEARCH,
                                                    help="linear1cycledrop, linear1cycle or fixed.")]
    = LrSchedule.linear1cycledrop,
    optimizer: Annotated[OptimizerName, typer.Option(metavar="NAME", rich_help_panel=SEARCH,
                                                     help="adam, sgd, sgdm or adamax (run on spheres).")]
    = OptimizerName.adam,
    noise_type: Annotated[NoiseType, typer.Option(metavar="TYPE", rich_help_panel=SEARCH,
                                                  help="trainable, fixed or zero noise inputs.")]
    = NoiseType.trainable,
    trainable_noise_layers: Annotated[int, typer.Option(min=0, metavar="N", rich_help_panel=SEARCH,
                                                        help="How many of the lowest noise layers are "
                                                             "optimised (trainable noise).")] = 5,
    bad_noise_layers: Annotated[str, typer.Option(metavar="LAYERS", rich_help_panel=SEARCH,
                                                  help="Noise layers set to zero: 'last', 'none' or indices "
                                                       "joined by '.' (17 is the last at 1024).")] = "last",
    tile_latent: Annotated[bool, flag("--tile-latent", panel=SEARCH,
                                      help="One latent for all layers instead of W+.")] = False,
    samples: Annotated[int, typer.Option(min=1, max=MAX_SAMPLES, metavar="N", rich_help_panel=SEARCH,
                                         help="Independent results per input (different faces).")] = 1,
    seed: Annotated[int, typer.Option(metavar="INT", rich_help_panel=SEARCH,
                                      help="Base seed; each image's start derives from it and its path.")] = 0,
    stop_at_eps: Annotated[bool, flag("--stop-at-eps", panel=SEARCH,
                                      help="Stop an image at its first iterate that meets eps; the next input "
                                           "takes its place in the batch.")] = False,
    align: Annotated[bool, flag("--align", panel=MODEL,
                                help="IN holds photos: find and align their faces first (as 'pulse align "
                                     "IN OUT/crops', 16 px crops), then upsample the crops. Needs the "
                                     "'align' extra.")] = False,
    # -- output
    recursive: Annotated[bool, flag("--recursive", "-r", panel=OUTPUT,
                                    help="Include sub-folders (mirrored in OUT).")] = False,
    overwrite: Annotated[bool, flag("--overwrite", panel=OUTPUT, help="Redo inputs that are done.")] = False,
    strict: Annotated[bool, flag("--strict", panel=OUTPUT,
                                 help="Exit 1 if any result (done earlier included) did not reach eps.")] = False,
    quiet: QuietFlag = False,
    json_summary: JsonFlag = False,
    # -- transparency
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", metavar="", rich_help_panel=TRANSPARENCY,
                                           help="Label every PNG as synthetic (XMP digital source type and "
                                                "provenance).")] = True,
    sheet: Annotated[bool, flag("--sheet", panel=TRANSPARENCY,
                                help="Contact sheets: OUT/sheets/<rel>.sheet.png per input and OUT/sheet.png.")]
    = False,
    check_face: Annotated[bool, flag("--check-face", panel=TRANSPARENCY,
                                     help="Run dlib's face detector on every result: face_score in results.jsonl "
                                          "(null: no face found), counted in the summary and marked on sheets. "
                                          "Needs the 'align' extra.")] = False,
    report: Annotated[bool, flag("--report", panel=TRANSPARENCY,
                                 help="At the end, write OUT/report.html from every record in OUT (as 'pulse "
                                      "report'); each run or shard sharing OUT rewrites it.")] = False,
    save_latents: Annotated[bool, flag("--save-latents", panel=TRANSPARENCY,
                                       help="Save OUT/<rel>.latents.safetensors (see 'pulse render').")] = False,
    save_every: Annotated[int | None, typer.Option(min=1, metavar="K", rich_help_panel=TRANSPARENCY,
                                                   help="Write the current image every K steps to "
                                                        "OUT/frames/<rel>/.", show_default=False)] = None,
    animate: Annotated[bool, flag("--animate", panel=TRANSPARENCY,
                                  help="Write OUT/<rel>.search.gif of the search.")] = False,
    # -- performance
    shard: Annotated[str | None, typer.Option(metavar="K/N|auto", rich_help_panel=PERFORMANCE, show_default=False,
                                              help="Only the inputs of shard K of N (by a stable hash of each "
                                                   "path); auto reads Slurm's or Kubernetes' array index. "
                                                   "Shards and other processes may share OUT.")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", rich_help_panel=PERFORMANCE,
                                        help="auto, cpu, cuda, cuda:N or mps (with --ray: chosen by each "
                                             "worker on its machine).")] = "auto",
    batch_size: Annotated[str, typer.Option(metavar="N|auto", rich_help_panel=PERFORMANCE,
                                            help="Images optimised together; auto: 1 on a CPU, as many as fit "
                                                 "on a GPU.")] = "auto",
    threads: Annotated[str, typer.Option(metavar="N|auto", rich_help_panel=PERFORMANCE,
                                         help="Torch threads per search. auto: the cores other processes leave "
                                              "free; small models (up to 256 px) one thread per search, a folder's "
                                              "inputs side by side, full-size ones one search with those threads. "
                                              "Waiting threads sleep (OMP_WAIT_POLICY=passive) unless you set a "
                                              "policy.")] = "auto",
    synthesis: Annotated[SynthesisPath, typer.Option(metavar="NAME", rich_help_panel=PERFORMANCE,
                                                     help="fast (the same function, 2-3x faster on a CPU), "
                                                          "reference (the original's operations) or auto (fast "
                                                          "where verified: the CPU).")] = SynthesisPath.auto,
    ray_address: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS|local", rich_help_panel=PERFORMANCE,
                                                    show_default=False,
                                                    help="Search on a Ray cluster (ADDRESS, e.g. auto or "
                                                         "ray://head:10001) or a Ray instance started for this "
                                                         "run (local). OUT must be shared with the workers. "
                                                         "Needs the 'ray' extra.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, metavar="N", rich_help_panel=PERFORMANCE,
                                                show_default=False,
                                                help="With --ray: worker processes, each loading the model "
                                                     "once. Default: one per GPU, else one per CPU core / "
                                                     "threads.")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(min=0.0, metavar="G", rich_help_panel=PERFORMANCE,
                                                          show_default=False,
                                                          help="With --ray: GPUs per worker (fractions share "
                                                               "a GPU). Default: 1 where the cluster has "
                                                               "GPUs, else 0.")] = None,
    threads_per_worker: Annotated[int, typer.Option(min=1, metavar="T", rich_help_panel=PERFORMANCE,
                                                    help="With --ray: torch threads (and Ray CPUs) per "
                                                         "worker.")] = 1,
) -> None:
    if ray_address is not None:
        from ..run.ray_extra import ray_available

        if not ray_available():
            raise fail("--ray needs Ray: in your pulse-cli clone, pip install '.[ray]' "
                       "(pulse-depixelizer is not on PyPI)")
    elif workers is not None or gpus_per_worker is not None or threads_per_worker != 1:
        raise fail("--workers, --gpus-per-worker and --threads-per-worker go with --ray")
    if ray_address is not None and threads.strip().lower() != "auto":
        raise fail("--threads is for a run on this machine; Ray workers take --threads-per-worker")
    try:
        _check_values_before_torch(loss=loss, eps=eps, steps=steps, lr=lr, search=search, device=device)
        bad_layers = parse_noise_layers(bad_noise_layers)
        batch = parse_batch_size(batch_size)
        search_threads = parse_threads_option(threads)
        shard_spec = parse_shard(shard)
        check_input(in_dir)
        check_in_and_out(in_dir, out_dir)
        check_output_folder(out_dir)
        check_bookkeeping(out_dir)
        if align:
            from .align import check_align_extra

            check_align_extra()
        if check_face:
            from ..align.detect import INSTALL_HINT, MissingExtra, import_dlib

            try:
                import_dlib()
            except MissingExtra:
                raise UsageError(f"--check-face needs dlib (the 'align' extra): {INSTALL_HINT}") from None
        checkpoint_path, how = find_checkpoint(checkpoint)
        if gaussian_fit is not None and not gaussian_fit.is_file():
            raise UsageError(f"gaussian fit {gaussian_fit} does not exist")
        prefer_passive_waiting()  # before torch loads OpenMP, which reads it once
        from ..device import check_device_spec, resolve_device
        from ..run.plan import FinishedIndex, RunOptions, plan_jobs
        from ..run.records import RESULTS_FILE
        from ..search.pulse import SearchConfig

        config = SearchConfig(loss=loss, eps=eps, steps=steps, lr=lr, lr_schedule=lr_schedule.value,
                              optimizer=optimizer.value, noise_type=noise_type.value,
                              trainable_noise_layers=trainable_noise_layers,
                              bad_noise_layers=bad_layers, tile_latent=tile_latent, mode=search)
        try:
            config.validate()
            from ..checkpoints.loading import latent_kind_of
            from ..weights.local import family_from_name

            # DCGAN: no GEOCROSS in the default loss; GEOCROSS or a noise option given is a usage error
            config = config.for_latent(latent_kind_of(checkpoint_path, family_from_name), options_given(ctx))
            # with --ray the workers resolve the device: theirs may have GPUs this machine lacks
            torch_device = check_device_spec(device) if ray_address is not None else resolve_device(device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        options = RunOptions(samples=samples, seed=seed, overwrite=overwrite, recursive=recursive or align,
                             shard=shard_spec,
                             metadata=metadata, save_latents=save_latents, save_every=save_every,
                             animate=animate, sheet=sheet, stop_at_eps=stop_at_eps, check_face=check_face)
    except UsageError as exc:
        raise fail(str(exc)) from None
    photos_failed = 0
    if align:  # the crops are then the inputs; they sit in OUT/crops, which no output is written into
        from .align import align_into

        photos_failed = align_into(in_dir, out_dir / "crops", recursive=recursive, overwrite=overwrite, quiet=quiet)
        in_dir = out_dir / "crops"
    def damaged(line: int, reason: str) -> None:
        if not quiet:
            err_console.print(f"[yellow]warning:[/] {escape(printable(str(out_dir / RESULTS_FILE)))} line {line} "
                              f"is not a record pulse can use ({escape(reason)}); it is ignored", markup=True)

    index = FinishedIndex(out_dir / RESULTS_FILE, on_damaged=damaged)  # read once: planning, then the run
    jobs = plan_jobs(in_dir, out_dir, options, index)

    if not quiet:
        if how != "given":
            err_console.print(f"using checkpoint {printable(str(checkpoint_path))} ({how})", markup=False)
        from ..checkpoints.demo_marker import DEMO_WARNING, is_demo_checkpoint

        if is_demo_checkpoint(checkpoint_path):
            err_console.print(f"[yellow]warning:[/] {escape(DEMO_WARNING)}", markup=True)
        err_console.print(_header_line(jobs, in_dir, options.shard) + f"; device {torch_device}"
                          + (" (on the Ray workers)" if ray_address is not None else ""), markup=False)
    if not jobs:
        err_console.print(f"[yellow]warning:[/] no images found in {escape(printable(str(in_dir)))}"
                          + ("" if recursive else " (use --recursive for sub-folders)"), markup=True)

    engine_options = {"device": torch_device, "config": config, "synthesis": synthesis.value, "batch_size": batch,
                      "gaussian_fit": gaussian_fit, "threads": search_threads}
    ray = None if ray_address is None else {
        "address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker,
        "threads": threads_per_worker, "rows_per_call": batch if isinstance(batch, int) else None}
    with sigterm_as_interrupt():
        summary = _run(jobs, index, out_dir, checkpoint_path, options, quiet=quiet, engine_options=engine_options,
                       ray=ray)
    if summary.other_options and not quiet:
        names = ", ".join(sorted(summary.other_options))
        count = max(summary.other_options.values())
        err_console.print(f"[yellow]warning:[/] {count} done input(s) were made with other options ({names}); "
                          "they are skipped, --overwrite redoes them", markup=True)
    if not quiet:
        _print_summary(summary, out_dir, sheet=sheet, eps=config.eps, check_face=check_face)
    if report and (out_dir / RESULTS_FILE).is_file():  # from all of OUT's records: the last run to end has all
        from .report import inputs_folder, write_report_or_fail

        write_report_or_fail(out_dir, inputs_folder(in_dir), quiet=quiet)
    if json_summary:
        typer.echo(json.dumps(_summary_object(summary, out_dir, check_face)))
    if strict and summary.not_met_eps:
        err_console.print(f"[bold red]error:[/] {summary.not_met_eps} input(s) did not reach eps "
                          f"{config.eps:g} (--strict), skipped ones included", markup=True)
    failed = summary.counts["failed"] > 0 or photos_failed > 0 or (strict and summary.not_met_eps > 0)
    raise typer.Exit(FAILED if failed else 0)


def _check_values_before_torch(*, loss: str, eps: float, steps: int, lr: float, search: str, device: str) -> None:
    """The option values that can be checked without torch (which takes seconds to import): a typo is
    refused at once. The rest is checked once torch is there (SearchConfig.validate, the device's presence)."""
    from ..device import check_device_spec
    from ..search.limits import SEARCH_MODES, check_numbers, parse_loss

    try:
        parse_loss(loss)
        check_numbers(steps=steps, eps=eps, lr=lr)
        check_device_spec(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if search not in SEARCH_MODES:
        raise UsageError(f"--search: unknown search mode {search!r}; known: {', '.join(SEARCH_MODES)}")


def _run(jobs, index, out_dir: Path, checkpoint: Path, options, *, quiet: bool, engine_options: dict[str, Any],
         ray: dict[str, Any] | None = None):
    from ..engine import Engine
    from ..errors import describe_os_error
    from ..run.runner import Runner
    from .progress import TerminalReporter

    reporter = TerminalReporter(err_console, quiet=quiet)
    try:
        if ray is not None:
            from ..run.ray_backend import RayRunError, run_on_ray

            try:
                return run_on_ray(jobs, out_dir, checkpoint, options, engine_options=engine_options,
                                  reporter=reporter, index=index, **ray)
            except RayRunError as exc:
                if exc.bad_input:  # what a plain run reports before it starts: the same exit code
                    raise fail(str(exc)) from None
                raise fail(f"{exc}; finished outputs are kept, rerun to resume", FAILED) from None
        engine = None
        if any(not j.done for j in jobs):
            try:
                engine = Engine.load(checkpoint, notify=reporter.note, **engine_options)
            except ValueError as exc:  # CheckpointError included: the file, or an option it cannot take
                raise fail(str(exc)) from None
            if engine.batch_size_auto:
                reporter.note(f"batch size {engine.batch_size} (auto)")
            if engine.threads_plan is not None and engine.threads_plan.auto:
                reporter.note(f"threads: {engine.threads_plan.describe()} (auto)")
        return Runner(engine, out_dir, options=options, checkpoint=checkpoint, config=engine_options["config"],
                      reporter=reporter).run(jobs, index)
    except OSError as exc:  # results.jsonl itself could not be written: the run cannot record anything more
        reporter.close()
        raise fail(f"cannot write {describe_os_error(exc)}; finished outputs are kept, rerun to resume",
                   FAILED) from None
    except KeyboardInterrupt as exc:
        reporter.close()
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        err_console.print(f"{what}: finished outputs are kept; rerun the same command to resume")
        raise typer.Exit(TERMINATED if isinstance(exc, Terminated) else INTERRUPTED) from None


def _header_line(jobs, in_dir: Path, shard: tuple[int, int] | None) -> str:
    """`4 image(s) in IN, 1 already done`; with --shard, `3 of 4 image(s) in IN (shard 1/2), ...`."""
    done = sum(j.done for j in jobs)
    where = printable(str(in_dir))
    if shard is None:
        return f"{len(jobs)} image(s) in {where}, {done} already done"
    discovered = getattr(jobs, "discovered", len(jobs))
    return f"{len(jobs)} of {discovered} image(s) in {where} (shard {shard[0]}/{shard[1]}), {done} already done"


def _skipped_earlier(summary) -> dict[str, int]:
    """What the skipped inputs' earlier runs found (failed inputs are never skipped: they are redone)."""
    from ..run.records import DONE, SKIPPED

    skipped = [r for r in summary.records if r.status == SKIPPED]
    return {status: sum(r.earlier_status == status for r in skipped) for status in DONE}


def _summary_object(summary, out_dir: Path, check_face: bool = False) -> dict[str, Any]:
    from ..run.records import FAILED, SKIPPED

    return {
        "total": summary.total,
        **summary.counts,
        "skipped_earlier": _skipped_earlier(summary),
        "seconds": round(summary.seconds, 3),
        "out": str(out_dir),
        "results": str(out_dir / "results.jsonl"),
        "failed_inputs": [{"input": r.input, "error": r.error} for r in summary.records if r.status == FAILED],
        "not_converged_inputs": [{"input": r.input, "best_l2": r.best_l2, "earlier": r.status == SKIPPED}
                                 for r in summary.records if r.met_eps is False],
        **({"no_face": summary.no_face} if check_face else {}),  # results in which dlib found no face
    }


# Inputs named one per line in the summary before the rest are counted: about a screenful in all.
SUMMARY_LIST_LINES = 15


def _print_summary(summary, out_dir: Path, *, sheet: bool, eps: float, check_face: bool = False) -> None:
    """The counts, then the inputs that failed or did not reach eps (up to a screenful), then what to do next."""
    from rich.table import Table

    from ..run.records import FAILED, SKIPPED

    table = Table(title="pulse upsample", show_edge=False)
    columns = ["ok", "not converged", "failed", "skipped", "total", "seconds"] + (["no face"] if check_face else [])
    for column in columns:
        table.add_column(column, justify="right")
    c = summary.counts
    cells = [str(c["ok"]), str(c["not_converged"]), str(c["failed"]), str(c["skipped"]), str(summary.total),
             f"{summary.seconds:.1f}"] + ([str(summary.no_face)] if check_face else [])
    table.add_row(*cells)
    err_console.print(table)
    if c["skipped"]:
        earlier = _skipped_earlier(summary)
        err_console.print(f"skipped {c['skipped']} done earlier: {earlier['ok']} ok, "
                          f"{earlier['not_converged']} not converged", markup=False)
    failed = [r for r in summary.records if r.status == FAILED]
    unconverged = [r for r in summary.records if r.met_eps is False]
    lines: list[str] = []
    if failed:
        lines.append(f"failed ({len(failed)}):")
        lines += [f"  {printable(r.input)}: {printable(r.error or 'failed')}" for r in failed]
    if unconverged:
        lines.append(f"not converged, L2 above eps {eps:g} ({len(unconverged)}):")
        for r in unconverged:
            l2 = f": L2 {r.best_l2:.4g}" if r.best_l2 is not None else ""
            lines.append(f"  {printable(r.input)}{l2}" + (" (done earlier)" if r.status == SKIPPED else ""))
    shown = lines[:SUMMARY_LIST_LINES]
    for line in shown:
        err_console.print(line, markup=False)
    if len(lines) > len(shown):
        results = printable(str(out_dir / "results.jsonl"))
        err_console.print(f"  ... {len(lines) - len(shown)} more line(s): see {results}", markup=False)
    out = printable(str(out_dir))
    next_steps = [f"results: {out}/ (one PNG per input), logs in {out}/logs/, records in {out}/results.jsonl"]
    if sheet:
        next_steps.append(f"sheets: {out}/sheet.png and {out}/sheets/")
    if unconverged:
        next_steps.append("not converged (best images written): --search robust or more --steps may get closer; "
                          "add --overwrite, which redoes every input")
    if failed:
        next_steps.append("failed: fix what the lines above say, then rerun the same command (done inputs are "
                          "skipped)")
    for line in next_steps:
        err_console.print(f"next: {line}" if line is next_steps[0] else f"      {line}", markup=False)
