"""`pulse upsample IN OUT`: parse and check the options, build the engine once, run, print the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..search.limits import MAX_LR, MAX_SAMPLES, MAX_STEPS
from ..threads import prefer_wait_policy
from ..weights import DEFAULT_ORDER
from .console import (
    FAILED,
    DamagedLines,
    err_console,
    fail,
    print_wrapped,
    printable,
    sigterm_as_interrupt,
    stopped,
)
from .options import (
    ADVANCED,
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
2 usage error (bad IN/OUT, checkpoint or option value); 130 / 143 stopped by Ctrl-C / SIGTERM, 141 stdout or
stderr closed (| head): finished outputs are kept.

Every option in full: docs/usage.md; the files, records and exit codes: docs/output-contract.md (in the
repository).

[bold]Examples[/]

  pulse upsample crops/ out/ --checkpoint weights/demo
  pulse upsample crops/ out/ --recursive --samples 3 --seed 7
  pulse upsample crops/ out/ --json --quiet | jq .failed

  # photos: find and align the faces first
  pulse upsample photos/ out/ --align

  # how many different faces fit one crop, where they disagree, and whether they are one person
  pulse upsample crops/ out/ --samples 6 --sheet --check-face
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
             f"Default: the first found in ./weights/ or the user weights folder (PULSE_HOME) in this order: "
             f"{DEFAULT_ORDER}. The run says which and why.")] = None,
    gaussian_fit: Annotated[Path | None, typer.Option(
        metavar="PATH", rich_help_panel=MODEL,
        help="PULSE's gaussian_fit.pt. Default: beside the checkpoint, else computed once and cached.")] = None,
    # -- search
    steps: Annotated[int, typer.Option(min=1, max=MAX_STEPS, metavar="N", rich_help_panel=SEARCH,
                                       help="Optimisation steps per image.")] = 100,
    eps: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="THRESHOLD", rich_help_panel=SEARCH,
                                       help="Target L2 (mean squared error at input resolution): a result "
                                            "at or below it counts as converged.")] = 2e-3,
    loss: Annotated[str, typer.Option(metavar="SPEC", rich_help_panel=SEARCH,
                                      help="WEIGHT*NAME terms joined by '+'; names L2, L1, GEOCROSS (not for a "
                                           "DCGAN: its default is 100*L2).")]
    = "100*L2+0.05*GEOCROSS",
    search: Annotated[str, typer.Option("--search", metavar="NAME", rich_help_panel=SEARCH,
                                        help="pulse: PULSE as published. robust: reaches eps far more often, "
                                             "sooner (docs/search-robust.md).")] = "pulse",
    lr: Annotated[float, typer.Option(metavar="RATE", rich_help_panel=SEARCH,
                                      help=f"Base learning rate (above 0, at most {MAX_LR:g}; "
                                           "--search robust runs at twice it).")] = 0.4,
    lr_schedule: Annotated[LrSchedule, typer.Option(metavar="NAME", rich_help_panel=SEARCH,
                                                    help="linear1cycledrop, linear1cycle or fixed.")]
    = LrSchedule.linear1cycledrop,
    optimizer: Annotated[OptimizerName, typer.Option(metavar="NAME", rich_help_panel=SEARCH,
                                                     help="adam, sgd, sgdm or adamax (run on spheres).")]
    = OptimizerName.adam,
    samples: Annotated[int, typer.Option(min=1, max=MAX_SAMPLES, metavar="N", rich_help_panel=SEARCH,
                                         help="Independent results per input (different faces); from 2, also "
                                              "OUT/<rel>.disagreement.png, where they differ.")] = 1,
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
    sheet: Annotated[bool, flag("--sheet", panel=OUTPUT,
                                help="Contact sheets: OUT/sheets/<rel>.sheet.png per input and OUT/sheet.png.")]
    = False,
    check_face: Annotated[bool, flag("--check-face", panel=TRANSPARENCY,
                                     help="Run dlib's face detector on every result: face_score in results.jsonl "
                                          "(null: no face found), counted in the summary and marked on sheets. "
                                          "With --samples N >= 2, also dlib's face descriptor: how many different "
                                          "people the samples are. Needs the 'align' extra.")] = False,
    report: Annotated[bool, flag("--report", panel=OUTPUT,
                                 help="At the end, write OUT/report.html from every record in OUT (as 'pulse "
                                      "report'); each run or shard sharing OUT rewrites it.")] = False,
    save_latents: Annotated[bool, flag("--save-latents", panel=OUTPUT,
                                       help="Save OUT/<rel>.latents.safetensors (see 'pulse render').")] = False,
    save_every: Annotated[int | None, typer.Option(min=1, metavar="K", rich_help_panel=OUTPUT,
                                                   help="Write the current image every K steps to "
                                                        "OUT/frames/<rel>/.", show_default=False)] = None,
    animate: Annotated[bool, flag("--animate", panel=OUTPUT,
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
                                              "Waiting threads spin briefly then sleep with auto, sleep at once "
                                              "with N, unless you set OpenMP's wait policy.")] = "auto",
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
    # -- advanced: StyleGAN's noise inputs and latent layout
    noise_type: Annotated[NoiseType, typer.Option(metavar="TYPE", rich_help_panel=ADVANCED,
                                                  help="trainable, fixed or zero noise inputs.")]
    = NoiseType.trainable,
    trainable_noise_layers: Annotated[int, typer.Option(min=0, metavar="N", rich_help_panel=ADVANCED,
                                                        help="How many of the lowest noise layers are "
                                                             "optimised (trainable noise).")] = 5,
    bad_noise_layers: Annotated[str, typer.Option(metavar="LAYERS", rich_help_panel=ADVANCED,
                                                  help="Noise layers set to zero: 'last', 'none' or indices "
                                                       "joined by '.' (17 is the last at 1024).")] = "last",
    tile_latent: Annotated[bool, flag("--tile-latent", panel=ADVANCED,
                                      help="One latent for all layers instead of W+.")] = False,
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
        identities, no_identities = _identities_wanted(check_face, samples)
        checkpoint_path, how = find_checkpoint(checkpoint)
        if gaussian_fit is not None and not gaussian_fit.is_file():
            raise UsageError(f"gaussian fit {gaussian_fit} does not exist")
        prefer_wait_policy(search_threads)  # before torch loads OpenMP, which reads it once
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
            _refuse_what_robust_decides(config, options_given(ctx))
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
                             animate=animate, sheet=sheet, stop_at_eps=stop_at_eps, check_face=check_face,
                             identities=identities)
    except UsageError as exc:
        raise fail(str(exc)) from None
    from ..files.atomic import confine

    confine(out_dir)  # from here on, nothing below OUT is read or written through a symbolic link
    photos_failed = 0
    if align:  # the crops are then the inputs; they sit in OUT/crops, which no output is written into
        from .align import align_into

        photos_failed = align_into(in_dir, out_dir / "crops", recursive=recursive, overwrite=overwrite, quiet=quiet)
        in_dir = out_dir / "crops"
    damaged = DamagedLines(quiet=quiet)
    index = FinishedIndex(out_dir / RESULTS_FILE,  # read once: planning, then the run
                          on_damaged=lambda line, reason: damaged(out_dir / RESULTS_FILE, line, reason))
    jobs = plan_jobs(in_dir, out_dir, options, index)

    if not quiet:
        if no_identities:
            err_console.print(f"[yellow]warning:[/] {escape(no_identities)}", markup=True)
        if how != "given":
            print_wrapped(err_console, f"using checkpoint {printable(str(checkpoint_path))} ({how})", indent=4)
        from ..checkpoints.demo_marker import DEMO_WARNING, is_demo_checkpoint

        if is_demo_checkpoint(checkpoint_path):
            print_wrapped(err_console, f"[yellow]warning:[/] {escape(DEMO_WARNING)}", indent=4, markup=True)
        err_console.print(_header_line(jobs, in_dir, options.shard) + f"; device {torch_device}"
                          + (" (on the Ray workers)" if ray_address is not None else ""), markup=False)
    if not jobs:
        print_wrapped(err_console, f"[yellow]warning:[/] no images found in {escape(printable(str(in_dir)))}"
                      + ("" if recursive else " (use --recursive for sub-folders)"), indent=4, markup=True)

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
        _print_summary(summary, out_dir, sheet=sheet, config=config, samples=samples, check_face=check_face,
                       no_identities=no_identities)
    if report and (out_dir / RESULTS_FILE).is_file():  # from all of OUT's records: the last run to end has all
        from .report import inputs_folder, write_report_or_fail

        write_report_or_fail(out_dir, inputs_folder(in_dir), quiet=quiet, on_damaged=damaged)
    if json_summary:
        typer.echo(json.dumps(_summary_object(summary, out_dir, check_face, no_identities)))
    if strict and summary.not_met_eps:
        err_console.print(f"[bold red]error:[/] {summary.not_met_eps} input(s) did not reach eps "
                          f"{config.eps:g} (--strict), skipped ones included", markup=True)
    failed = summary.counts["failed"] > 0 or photos_failed > 0 or (strict and summary.not_met_eps > 0)
    raise typer.Exit(FAILED if failed else 0)


def _identities_wanted(check_face: bool, samples: int) -> tuple[bool, str | None]:
    """Whether the run counts the people an input's samples are (--check-face with several samples), and if it
    cannot (dlib's face-recognition model missing), the reason, said once: the rest of the run goes on."""
    if not check_face or samples < 2:
        return False, None
    from ..align.detect import MissingExtra
    from ..align.identity import check_installed

    try:
        check_installed()
    except MissingExtra as exc:
        return False, f"--check-face: whether the samples are the same person is not measured: {exc}"
    return True, None


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


def _refuse_what_robust_decides(config, given: set[str]) -> None:
    """An option given with --search robust that robust decides itself would be accepted and not applied."""
    if config.mode != "robust":
        return
    from ..search.config import option_name
    from ..search.robust import RobustOptions

    for name in RobustOptions().overrides():
        if name in given:
            raise ValueError(f"{option_name(name)} does not apply to --search robust, which decides it itself; "
                             "leave it out, or use --search pulse")


def _run(jobs, index, out_dir: Path, checkpoint: Path, options, *, quiet: bool, engine_options: dict[str, Any],
         ray: dict[str, Any] | None = None):
    from ..engine import Engine
    from ..errors import describe_os_error
    from ..run.runner import OutInUse, Runner
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
    except OutInUse as exc:  # another model or other options are being searched in OUT right now
        reporter.close()
        raise fail(str(exc)) from None
    except OSError as exc:  # results.jsonl itself could not be written: the run cannot record anything more
        reporter.close()
        raise fail(f"cannot write {describe_os_error(exc)}; finished outputs are kept, rerun to resume",
                   FAILED) from None
    except KeyboardInterrupt as exc:
        reporter.close()
        raise stopped(exc) from None


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


def _search_seconds(summary) -> float:
    """The search time of this run: what its searched inputs' records say (each search's share of the
    optimisation steps' time), as the report sums it; skipped inputs add nothing."""
    from ..run.records import DONE

    return sum(r.seconds or 0.0 for r in summary.records if r.status in DONE)


def _summary_object(summary, out_dir: Path, check_face: bool = False,
                    no_identities: str | None = None) -> dict[str, Any]:
    from ..run.records import FAILED, SKIPPED

    return {
        "total": summary.total,
        **summary.counts,
        "skipped_earlier": _skipped_earlier(summary),
        "seconds": round(summary.seconds, 3),
        "search_seconds": round(_search_seconds(summary), 3),
        "out": str(out_dir),
        "results": str(out_dir / "results.jsonl"),
        "failed_inputs": [{"input": r.input, "error": r.error} for r in summary.records if r.status == FAILED],
        "not_converged_inputs": [{"input": r.input, "worst_sample_l2": r.worst_sample_l2,
                                  "earlier": r.status == SKIPPED}
                                 for r in summary.records if r.met_eps is False],
        **({"no_face": summary.no_face} if check_face else {}),  # results in which dlib found no face
        **_identities_object(summary, no_identities),
    }


def _identities_object(summary, no_identities: str | None) -> dict[str, Any]:
    """With --check-face and several samples: how many inputs' samples are different people, or why that was
    not measured."""
    from ..align.identity import run_counts

    if no_identities:
        return {"identities": {"not_measured": no_identities}}
    counts = run_counts(r.identity for r in summary.records)
    return {"identities": counts} if counts else {}


# Inputs named one per line in the summary before the rest are counted: about a screenful in all.
SUMMARY_LIST_LINES = 15


def _print_summary(summary, out_dir: Path, *, sheet: bool, config, samples: int, check_face: bool = False,
                   no_identities: str | None = None) -> None:
    """The counts, then the inputs that failed or did not reach eps (up to a screenful), then what to do next."""
    from rich.table import Table

    from ..run.records import FAILED, SKIPPED
    from .progress import l2_text, samples_met

    table = Table(title="pulse upsample", show_edge=False)
    # inputs in the other columns; this one counts samples (a crop with 3 samples may show no face in 1 of them)
    columns = ["ok", "not converged", "failed", "skipped", "total", "search s"]
    columns += ["no face (samples)"] if check_face else []
    for column in columns:
        table.add_column(column, justify="right")
    c = summary.counts
    cells = [str(c["ok"]), str(c["not_converged"]), str(c["failed"]), str(c["skipped"]), str(summary.total),
             f"{_search_seconds(summary):.1f}"] + ([str(summary.no_face)] if check_face else [])
    table.add_row(*cells)
    err_console.print(table)
    from ..align.identity import run_counts, run_sentence

    counts = run_counts(r.identity for r in summary.records)
    if counts:
        err_console.print(f"identity: {run_sentence(counts)}", markup=False)
    elif no_identities:
        err_console.print(f"identity: {no_identities}", markup=False)
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
        lines.append(f"not converged, L2 above eps {config.eps:g} ({len(unconverged)}):")
        for r in unconverged:
            met = samples_met(r).strip(" ()")
            lines.append(f"  {printable(r.input)}: " + (f"{met}, " if met else "") + l2_text(r)
                         + (" (done earlier)" if r.status == SKIPPED else ""))
    shown = lines[:SUMMARY_LIST_LINES]
    for line in shown:
        print_wrapped(err_console, line, indent=6)
    if len(lines) > len(shown):
        results = printable(str(out_dir / "results.jsonl"))
        err_console.print(f"  ... {len(lines) - len(shown)} more line(s): see {results}", markup=False)
    out = printable(str(out_dir))
    next_steps = []
    if summary.total > len(failed):  # some input has results (none for an empty IN, or when all failed)
        pngs = "one PNG per input" if samples == 1 else \
            f"{samples} PNGs per input, <name>.sample0.png to .sample{samples - 1}.png"
        next_steps.append(f"results: {out}/ ({pngs}), logs in {out}/logs/, records in {out}/results.jsonl")
        if sheet:
            next_steps.append(f"sheets: {out}/sheet.png and {out}/sheets/")
        if any(r.disagreement for r in summary.records):
            next_steps.append(f"where the samples disagree (invented detail): {out}/<input>.disagreement.png")
    if unconverged:
        closer = "more --steps" if config.mode == "robust" else "--search robust or more --steps"
        next_steps.append(f"not converged (best images written): {closer} may get closer; add --overwrite, "
                          "which redoes every input")
    if failed:
        next_steps.append("failed: fix what the lines above say, then rerun the same command (done inputs are "
                          "skipped)")
    for k, line in enumerate(next_steps):
        print_wrapped(err_console, ("next: " if k == 0 else "      ") + line, indent=8)
