#!/usr/bin/env python
"""Seconds per PULSE optimisation step for full-size (1024x1024) generators on this CPU.

    python bench/bench.py [--quick] [--steps N] [--out bench/results.json] [--variants a,b] [--list]

Builds FFHQ-shaped StyleGAN v1 (PULSE layout, from the fixtures' manifest) and StyleGAN2 config-f
generators with random weights of realistic scale (no real weights can be had here), then times whole
optimisation steps (forward, backward, optimiser, best-iterate bookkeeping) after warm-up, at batch 1
and 4, for:

- `baseline`: plain float32 eager, written the way the original PULSE code runs a step (one optimiser
  over the batch's latents and noise, `(G(ws, noise) + 1) / 2`, loss, clone of the best image, backward,
  spherical step, scheduler step), using the model as it is and glibc's default allocator behaviour;
- `default`: the project's path, `pulse_cli.search.pulse.run_step` over `ImageSearch` objects;
- the candidate fast modes of bench/variants.py, all through the same `run_step`.

Variants are measured round-robin (one step of each in turn) so that load from other processes on this
2-core machine hits them alike; the median and the minimum over the timed steps are reported. Each
allocator setting gets its own worker process (glibc's malloc settings are process-wide, and a variant
run with them must not hand its heap to, or take it from, one run without), and the parent drives the
workers in lockstep, so only one computes at a time. `foreign_cpu` is the share of the machine's CPU time
used by other processes while timing: above ~0.1 the medians are unreliable (two OpenMP threads on two
cores stall at every barrier when another process takes a core) and the minimum is the better figure.

Also reported, per variant: peak memory of one step (VmHWM reset through /proc/self/clear_refs after a
malloc_trim, minus the RSS before the step), images/hour for 100-step searches, the max abs difference of
the generator output from the baseline's on a fixed input (and the relative difference of the latent
gradient), and the L2 reached on fixed targets after the timed steps (20 by default).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):  # the package from this checkout; variants.py beside this file
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import variants as V  # noqa: E402

from pulse_cli.networks.generator import LatentStats  # noqa: E402
from pulse_cli.networks.stylegan1 import StyleGAN1Generator  # noqa: E402
from pulse_cli.networks.stylegan2 import StyleGAN2Generator, setup_filter  # noqa: E402
from pulse_cli.search.downsample import BicubicDownsample  # noqa: E402
from pulse_cli.search.losses import geocross_loss, mean_squared_error, parse_loss  # noqa: E402
from pulse_cli.search.optim import SphericalOptimizer, lr_multiplier  # noqa: E402
from pulse_cli.search.pulse import ImageSearch, SearchConfig, map_latents, run_step  # noqa: E402

FIXTURES = Path(os.environ.get("PULSE_FIXTURES", ROOT.parent / "shared" / "fixtures"))
SG1_MANIFEST = "pulse_ffhq1024_state_dict_manifest.json"
SG2_MANIFEST = "stylegan2_ffhq1024_state_dict_manifest.json"
GAUSSIAN_FIT = "pulse_gaussian_fit.pt"
TARGET_SIZE = 32  # PULSE's usual input: 32x32 -> 1024x1024 (factor 32)
SEARCH_STEPS = 100  # for images/hour
UNTIMED_STEPS = 3  # warm-up (compilation), peak-memory step, re-warm


# ----------------------------------------------------------------------------------------------------------
# Generators with random weights


def _manifest(name: str) -> dict:
    path = FIXTURES / name
    if not path.is_file():
        raise SystemExit(f"missing {path} (set PULSE_FIXTURES to the fixtures folder)")
    return json.loads(path.read_text())


# The device every worker computes on (`--device`); the parent only drives the workers.
DEVICE = torch.device("cpu")


def _sync() -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def build_stylegan1(seed: int = 0) -> StyleGAN1Generator:
    """FFHQ 1024 StyleGAN v1 with N(0, 1) raw weights (what the equalised learning rate expects), small
    biases and noise weights, the real [1,2,1] blur kernel and a to-RGB scaled so that the output has
    roughly a real generator's range (std ~0.5)."""
    manifest = _manifest(SG1_MANIFEST)
    g = torch.Generator().manual_seed(seed)
    blur = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0]))
    synthesis = {}
    for key, shape in manifest["synthesis"].items():
        if key.endswith("intermediate.kernel"):
            synthesis[key] = (blur / blur.sum()).view(shape)
        elif key.endswith(".bias") or key.endswith("noise.weight"):
            synthesis[key] = 0.1 * torch.randn(shape, generator=g)
        else:
            synthesis[key] = torch.randn(shape, generator=g) * (0.4 if key.startswith("torgb") else 1.0)
    mapping = {key: (100.0 * torch.randn(shape, generator=g) if key.endswith("weight") else torch.zeros(shape))
               for key, shape in manifest["mapping"].items()}
    G = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
    G.latent_stats = latent_stats(G.w_dim)
    return G


def build_stylegan2(seed: int = 0) -> StyleGAN2Generator:
    """StyleGAN2 config-f FFHQ 1024, initialised the way NVIDIA's code initialises it (N(0,1) weights,
    affine biases 1, zero biases and noise strengths replaced by small values)."""
    manifest = _manifest(SG2_MANIFEST)["state_dict"]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in manifest.items():
        if key.endswith("resample_filter"):
            sd[key] = setup_filter()
        elif key.endswith("affine.bias"):
            sd[key] = torch.ones(shape)
        elif key.endswith("noise_strength"):
            sd[key] = torch.full(shape, 0.1)
        elif key.endswith(".bias") or key.endswith("w_avg"):
            sd[key] = torch.zeros(shape)
        elif key.startswith("mapping.") and key.endswith("weight"):
            sd[key] = 100.0 * torch.randn(shape, generator=g)
        else:
            sd[key] = torch.randn(shape, generator=g)
    G = StyleGAN2Generator.from_state_dict(sd).requires_grad_(False)
    G.latent_stats = latent_stats(G.w_dim)
    return G


def latent_stats(w_dim: int) -> LatentStats:
    path = FIXTURES / GAUSSIAN_FIT
    if path.is_file():
        fit = torch.load(path, map_location="cpu", weights_only=True)
        if fit["mean"].numel() == w_dim:
            return LatentStats(fit["mean"].float(), fit["std"].float())
    return LatentStats(torch.zeros(w_dim), torch.ones(w_dim))


# ----------------------------------------------------------------------------------------------------------
# The two kinds of step


class OriginalStep:
    """The original PULSE loop's step for a batch: one spherical Adam over the batch's latents and
    trainable noise, LambdaLR schedule, best image cloned whenever the batch loss improves."""

    def __init__(self, G, targets: torch.Tensor, seeds: list[int], config: SearchConfig):
        self.G, self.config = G, config
        self.targets = targets
        # Same starting point per image as ImageSearch (so L2 after N steps is comparable).
        starts = [ImageSearch(G, t, s, config, DEVICE) for t, s in zip(targets, seeds, strict=True)]
        self.latent = torch.cat([s.latent.detach() for s in starts]).requires_grad_(True)
        self.noise = []
        trainable = []
        for i in range(len(starts[0].noise)):
            n = torch.cat([s.noise[i].detach() for s in starts])
            if starts[0].noise[i].requires_grad:
                n.requires_grad_(True)
                trainable.append(n)
            self.noise.append(n)
        self.optimizer = SphericalOptimizer(config.optimizer, [self.latent, *trainable], lr=config.lr)
        # SphericalOptimizer steps the torch optimiser without the method LambdaLR watches (see search/optim.py):
        # its "scheduler stepped before the optimiser" warning is wrong here, and the rates are the same
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.opt, lambda step: lr_multiplier(config.lr_schedule, step, config.steps))
        self.downsample = BicubicDownsample(G.resolution // targets.shape[-1])
        self.stats = G.latent_stats
        self.min_loss = math.inf
        self.min_l2 = [math.inf] * len(seeds)
        self.last_l2 = [math.inf] * len(seeds)
        self.best_im = None
        self.steps = 0

    def __call__(self) -> None:
        self.optimizer.opt.zero_grad()
        latent_in = F.leaky_relu(self.latent * self.stats.std + self.stats.mean, 0.2)
        gen_im = (self.G.synthesize(latent_in, self.noise) + 1) / 2
        generated_lr = self.downsample(gen_im)
        mse = mean_squared_error(generated_lr, self.targets)
        loss = 100 * mse.clamp(min=self.config.eps).sum() + 0.05 * geocross_loss(latent_in).sum()
        if loss.item() < self.min_loss:
            self.min_loss = loss.item()
            self.best_im = gen_im.detach().clone()
        self.last_l2 = mse.tolist()
        self.min_l2 = [min(a, b) for a, b in zip(self.min_l2, self.last_l2, strict=True)]
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1

    def l2(self) -> tuple[list[float], list[float]]:
        return self.last_l2, self.min_l2


class ProjectStep:
    """`run_step` over ImageSearch objects (the project's default path) with a given generator."""

    def __init__(self, G, targets: torch.Tensor, seeds: list[int], config: SearchConfig):
        self.G = G
        self.searches = [ImageSearch(G, t, s, config, DEVICE) for t, s in
                         zip(targets, seeds, strict=True)]
        self.stats = G.latent_stats
        self.downsample = BicubicDownsample(G.resolution // targets.shape[-1])
        self.terms = parse_loss(config.loss)

    def __call__(self) -> None:
        # run_step's signature is still moving: pass the downsampler the way this checkout takes it.
        params = inspect.signature(run_step).parameters
        if "downsamplers" in params:
            extra = {"downsamplers": {self.searches[0].target.shape[-1]: self.downsample}}
        else:
            extra = {"downsample": self.downsample}
        run_step(self.G, self.searches, stats=self.stats, terms=self.terms, **extra)

    def l2(self) -> tuple[list[float], list[float]]:
        return ([s.history[-1].l2 for s in self.searches],
                [min(h.l2 for h in s.history) for s in self.searches])


# ----------------------------------------------------------------------------------------------------------
# Variants


@dataclass
class Variant:
    name: str
    kind: str  # "original" or "project"
    allocator: str  # "default" (glibc as is) or "cached" (V.configure_allocator)
    make: Callable | None = None  # G -> synthesize callable (None: G.synthesize as is)
    family: str = "stylegan1"
    note: str = ""
    compiled: bool = False


SG1_VARIANTS = [
    Variant("baseline", "original", "default", note="original PULSE step structure, model as is"),
    Variant("reference", "project", "default", note="run_step + ImageSearch, model's reference path (--reference)"),
    Variant("reference+alloc", "project", "cached", note="reference path with the CPU allocator setting"),
    Variant("default", "project", "cached", lambda G: V.product_synthesizer(G),
            note="the project's default: fast path (precomputed weights, NHWC from 128px, fused epilogue) + "
                 "allocator setting"),
    Variant("fast-f32-noalloc", "project", "default", lambda G: V.product_synthesizer(G),
            note="the default fast path without the allocator setting (ablation)"),
    Variant("nhwc-plain-f32", "project", "cached",
            lambda G: V.make_variant(G, epilogue="ops"),
            note="precompute + NHWC from 128px, epilogue as plain ops (ablation: no fused backward)"),
    Variant("fused-nchw-f32", "project", "cached",
            lambda G: V.make_variant(G, channels_last=False),
            note="precompute + fused epilogue, all NCHW (ablation: no channels_last)"),
    Variant("fast-f32-compiled", "project", "cached",
            lambda G: V.make_variant(G, epilogue="ops", compile=True), compiled=True,
            note="torch.compile (inductor) of the whole synthesis, plain-op epilogue"),
    Variant("fast-bf16", "project", "cached", lambda G: V.make_variant(G, dtype=torch.bfloat16),
            note="the fast path with bfloat16 activations/weights (statistics, to-RGB float32)"),
    Variant("fast-bf16-256", "project", "cached",
            lambda G: V.make_variant(G, dtype=torch.bfloat16, low_precision_min_res=256),
            note="bfloat16 only from 256x256 up"),
    Variant("autocast-bf16", "project", "cached", lambda G: V.autocast_synthesizer(G),
            note="model as is under torch.autocast('cpu', bfloat16)"),
    Variant("fast-bf16-compiled", "project", "cached",
            lambda G: V.make_variant(G, dtype=torch.bfloat16, epilogue="ops", compile=True),
            compiled=True, note="torch.compile of the bfloat16 synthesis"),
]
SG2_VARIANTS = [
    Variant("baseline", "original", "default", family="stylegan2", note="original step structure"),
    Variant("reference", "project", "default", family="stylegan2"),
    Variant("default", "project", "cached", family="stylegan2", note="the project's default: allocator setting"),
]
QUICK = ["baseline", "reference", "default", "fast-bf16"]
STANDARD = ["baseline", "reference", "reference+alloc", "default", "fast-f32-compiled", "fast-bf16",
            "fast-bf16-compiled"]
ABLATION = ["baseline", "reference+alloc", "default", "fast-f32-noalloc", "fused-nchw-f32", "nhwc-plain-f32",
            "fast-bf16-256", "autocast-bf16"]


# ----------------------------------------------------------------------------------------------------------
# Measurement helpers


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def peak_step_memory_mib(step: Callable[[], None]) -> float | None:
    """Run one step and return (peak RSS during it) - (RSS before it), MiB; None if not measurable.
    On CUDA: the step's peak allocated device memory."""
    if DEVICE.type == "cuda":
        _sync()
        before = torch.cuda.memory_allocated(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        step()
        _sync()
        return (torch.cuda.max_memory_allocated(DEVICE) - before) / 2**20
    V.malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        step()
        return None
    before = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - before) / 1024


def _cpu_times(pids: list[int]) -> tuple[float, float]:
    """(whole machine busy CPU seconds, CPU seconds of this process and of `pids`)."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(fields) - fields[3] - fields[4]) / hz  # minus idle and iowait
    t = os.times()
    own = t.user + t.system
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            own += (int(stat[11]) + int(stat[12])) / hz  # utime, stime
        except OSError:
            pass
    return busy, own


def make_targets(G, batch: int, seed: int = 1000) -> torch.Tensor:
    """Reachable targets: the generator's own images at other latents, downscaled to 32x32."""
    config = SearchConfig()
    down = BicubicDownsample(G.resolution // TARGET_SIZE)
    out = []
    with torch.no_grad():
        for b in range(batch):
            s = ImageSearch(G, torch.zeros(3, TARGET_SIZE, TARGET_SIZE), seed + b, config, DEVICE)
            ws = map_latents(s.latent, G.latent_stats, G.num_ws)
            out.append(down((G.synthesize(ws, s.noise) + 1) / 2).clamp(0, 1)[0])
    return torch.stack(out)


def numerics(G, synth: Callable, ref: dict) -> dict:
    """Output and latent-gradient differences of `synth` from G.synthesize on a fixed input."""
    latent = ref["latent"].clone().requires_grad_(True)
    ws = map_latents(latent, G.latent_stats, G.num_ws)
    img = synth(ws, ref["noise"])
    (img * ref["cotangent"]).sum().backward()
    diff = (img.detach() - ref["image"]).abs()
    in_01 = diff / 2  # the search uses (x + 1) / 2
    grad_rel = ((latent.grad - ref["grad"]).norm() / ref["grad"].norm()).item()
    return {
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "max_abs_diff_01_in_255ths": 255 * in_01.max().item(),
        "frac_pixels_over_2_255ths": (in_01 > 2 / 255).float().mean().item(),
        "latent_grad_rel_diff": grad_rel,
    }


def reference(G) -> dict:
    config = SearchConfig()
    s = ImageSearch(G, torch.zeros(3, TARGET_SIZE, TARGET_SIZE), 7, config, DEVICE)
    latent = s.latent.detach().clone().requires_grad_(True)
    cotangent = torch.randn((1, 3, G.resolution, G.resolution),
                            generator=torch.Generator().manual_seed(3)).to(DEVICE)
    ws = map_latents(latent, G.latent_stats, G.num_ws)
    img = G.synthesize(ws, s.noise)
    (img * cotangent).sum().backward()
    return {"latent": s.latent.detach(), "noise": s.noise, "cotangent": cotangent, "image": img.detach(),
            "grad": latent.grad.clone()}


# ----------------------------------------------------------------------------------------------------------



# ----------------------------------------------------------------------------------------------------------
# Workers: one process per allocator mode, so that glibc is pristine in the "default" one. The parent
# drives them in lockstep (only one computes at a time), which keeps the round-robin interleaving.


class Worker:
    """In-process side: the runs of one (family, batch, allocator mode)."""

    def __init__(self, family: str, batch: int, names: list[str], allocator: str):
        if allocator == "cached" and DEVICE.type == "cpu":
            V.configure_allocator()
        torch.manual_seed(0)
        self.G = (build_stylegan1() if family == "stylegan1" else build_stylegan2()).to(DEVICE)
        self.G.latent_stats = self.G.latent_stats.to(DEVICE)
        variants = {v.name: v for v in (SG1_VARIANTS if family == "stylegan1" else SG2_VARIANTS)}
        config = SearchConfig()
        targets = make_targets(self.G, batch)
        seeds = list(range(batch))
        self.batch = batch
        self.steps: dict[str, Callable[[], None]] = {}
        self.synths: dict[str, Callable | None] = {}
        self.errors: dict[str, str] = {}
        for name in names:
            v = variants[name]
            try:
                synth = v.make(self.G) if v.make is not None else None
                gen = V.FastGenerator(self.G, synth) if synth is not None else self.G
                cls = OriginalStep if v.kind == "original" else ProjectStep
                self.steps[name] = cls(gen, targets, seeds, config)
                self.synths[name] = synth
            except Exception as exc:  # a candidate that cannot run here is a result, not a crash
                self.errors[name] = f"{type(exc).__name__}: {exc}"

    def handle(self, cmd: dict) -> dict:
        name = cmd.get("variant")
        if name in self.errors:
            return {"error": self.errors[name]}
        try:
            if cmd["cmd"] == "warmup":
                _sync()
                t = time.perf_counter()
                self.steps[name]()
                _sync()
                warm = time.perf_counter() - t
                return {"warmup_s": warm, "memory_mib": peak_step_memory_mib(self.steps[name])}
            if cmd["cmd"] == "rewarm":
                # The memory step started from a trimmed heap; one more untimed step, run just before the
                # timed rounds, re-grows it (every variant runs it: same number of steps for the L2).
                self.steps[name]()
                return {}
            if cmd["cmd"] == "step":
                _sync()
                t = time.perf_counter()
                self.steps[name]()
                _sync()
                return {"seconds": time.perf_counter() - t}
            if cmd["cmd"] == "finish":
                last, best = self.steps[name].l2()
                out = {"l2_last": last, "l2_best": best}
                if self.batch == 1:
                    if not hasattr(self, "ref"):
                        self.ref = reference(self.G)
                    try:
                        out["numerics_vs_model"] = numerics(self.G, self.synths[name] or self.G.synthesize,
                                                            self.ref)
                    except Exception as exc:
                        out["numerics_vs_model"] = {"error": f"{type(exc).__name__}: {exc}"}
                return out
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            return {"error": self.errors[name]}
        raise ValueError(f"unknown command {cmd}")


def worker_main(spec: str, threads: int | None) -> int:
    """`--worker SPEC`: read JSON commands on stdin, answer one JSON line each on stdout."""
    if threads:
        torch.set_num_threads(threads)
    args = json.loads(spec)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to the log, not the protocol
    global DEVICE
    DEVICE = torch.device(args.get("device", "cpu"))
    worker = Worker(args["family"], args["batch"], args["variants"], args["allocator"])
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        print(json.dumps(worker.handle(cmd)), file=out, flush=True)
    return 0


class WorkerProcess:
    def __init__(self, family: str, batch: int, names: list[str], allocator: str, threads: int | None,
                 device: str = "cpu"):
        spec = json.dumps({"family": family, "batch": batch, "variants": names, "allocator": allocator,
                           "device": device})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", spec]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # ready

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def bench_family(family: str, variants: list[Variant], batches: list[int], steps: dict[int, int],
                 threads: int | None, log, device: str = "cpu") -> list[dict]:
    results = []
    for batch in batches:
        modes = sorted({v.allocator for v in variants})
        workers = {m: WorkerProcess(family, batch, [v.name for v in variants if v.allocator == m], m, threads,
                                    device) for m in modes}
        try:
            info: dict[str, dict] = {v.name: {"times": []} for v in variants}
            for v in variants:  # warm-up (compilation), an untimed step measuring memory, re-warm
                reply = workers[v.allocator].ask(cmd="warmup", variant=v.name)
                info[v.name].update(reply)
                log(f"  {family} b{batch} {v.name}: {reply}")
            for v in variants:
                if "error" not in info[v.name]:
                    info[v.name].update(workers[v.allocator].ask(cmd="rewarm", variant=v.name))
            pids = [w.proc.pid for w in workers.values()]
            busy0, own0 = _cpu_times(pids)
            wall0 = time.perf_counter()
            for r in range(max(steps[batch] - UNTIMED_STEPS, 1)):
                for v in variants:
                    if "error" in info[v.name]:
                        continue
                    reply = workers[v.allocator].ask(cmd="step", variant=v.name)
                    if "error" in reply:
                        info[v.name]["error"] = reply["error"]
                    else:
                        info[v.name]["times"].append(reply["seconds"])
                log(f"  {family} b{batch} round {r + 1}: " + ", ".join(
                    f"{v.name} {info[v.name]['times'][-1]:.2f}" for v in variants if info[v.name]["times"]))
            busy1, own1 = _cpu_times(pids)
            wall = time.perf_counter() - wall0
            foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
            for v in variants:
                if "error" not in info[v.name]:
                    info[v.name].update(workers[v.allocator].ask(cmd="finish", variant=v.name))
        finally:
            for w in workers.values():
                w.close()
        for v in variants:
            i = info[v.name]
            row = {"family": family, "variant": v.name, "batch": batch, "note": v.note,
                   "allocator": v.allocator, "error": i.get("error")}
            if not row["error"] and i["times"]:
                med = statistics.median(i["times"])
                row.update({
                    "sec_per_step_median": med,
                    "sec_per_step_min": min(i["times"]),
                    "sec_per_image_step": med / batch,
                    "timed_steps": len(i["times"]),
                    "warmup_s": i["warmup_s"],
                    "step_peak_memory_mib": i["memory_mib"],
                    "images_per_hour_100_steps": 3600 / (SEARCH_STEPS * med / batch),
                    "steps_run": len(i["times"]) + UNTIMED_STEPS,
                    "foreign_cpu": foreign,
                    "l2_last": i["l2_last"],
                    "l2_best": i["l2_best"],
                })
                if "numerics_vs_model" in i:
                    row["numerics_vs_model"] = i["numerics_vs_model"]
            elif not row["error"]:
                row["error"] = "no timed steps"
            results.append(row)
    return results


def add_ratios(rows: list[dict]) -> None:
    base = {(r["family"], r["batch"]): r for r in rows if r["variant"] == "baseline" and not r["error"]}
    b1 = {(r["family"], r["variant"]): r for r in rows if r["batch"] == 1 and not r["error"]}
    for r in rows:
        if r["error"]:
            continue
        b = base.get((r["family"], r["batch"]))
        if b:
            r["speedup_vs_baseline"] = b["sec_per_step_median"] / r["sec_per_step_median"]
            r["speedup_vs_baseline_min"] = b["sec_per_step_min"] / r["sec_per_step_min"]
        one = b1.get((r["family"], r["variant"]))
        if one and r["batch"] > 1:
            r["per_image_cost_vs_batch1"] = r["sec_per_image_step"] / one["sec_per_image_step"]


def print_table(rows: list[dict]) -> None:
    head = (f"{'family':9} {'variant':20} {'B':>2} {'s/step':>7} {'min':>6} {'s/img':>6} {'x base':>6} "
            f"{'x min':>6} {'img/h':>6} {'mem MiB':>8} {'maxdiff':>8} {'/255':>5} {'grad rel':>8} {'L2 best':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["error"]:
            print(f"{r['family']:9} {r['variant']:20} {r['batch']:>2} ERROR {r['error'][:80]}")
            continue
        num = r.get("numerics_vs_model", {})
        mem = r["step_peak_memory_mib"]
        print(f"{r['family']:9} {r['variant']:20} {r['batch']:>2} {r['sec_per_step_median']:7.3f} "
              f"{r['sec_per_step_min']:6.3f} {r['sec_per_image_step']:6.3f} "
              f"{r.get('speedup_vs_baseline', float('nan')):6.2f} "
              f"{r.get('speedup_vs_baseline_min', float('nan')):6.2f} {r['images_per_hour_100_steps']:6.1f} "
              f"{(f'{mem:8.0f}' if mem is not None else '       -')} "
              f"{num.get('max_abs_diff', float('nan')):8.1e} {num.get('max_abs_diff_01_in_255ths', float('nan')):5.2f} "
              f"{num.get('latent_grad_rel_diff', float('nan')):8.1e} {min(r['l2_best']):8.5f}")
    fam_b = sorted({(r["family"], r["batch"], round(r.get("foreign_cpu", 0), 2)) for r in rows if not r["error"]})
    print("foreign CPU share during timing (other processes):",
          ", ".join(f"{f} b{b}: {x:.2f}" for f, b, x in fam_b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer variants and steps (~1-2 minutes)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimisation steps per variant at batch 1, 3 untimed included (default 20, quick 6)")
    parser.add_argument("--steps-batch4", type=int, default=None,
                        help="steps at batch 4, untimed ones included (default 5, quick 4)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated StyleGAN v1 variants (see --list), or 'ablation'")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--no-sg2", action="store_true", help="skip StyleGAN2")
    parser.add_argument("--sg2-batches", default=None, help="default 1 (quick: none); e.g. 1,4")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (CUDA: untested, no GPU here)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.threads)

    if args.list:
        for v in SG1_VARIANTS:
            print(f"{v.name:20} {v.note}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variants == "ablation":
        names = ABLATION
    else:
        names = args.variants.split(",") if args.variants else (QUICK if args.quick else STANDARD)
    known = {v.name: v for v in SG1_VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; see --list")
    if "baseline" not in names:
        names = ["baseline", *names]
    variants = [known[n] for n in names]
    batches = [int(b) for b in args.batches.split(",")]
    steps = {b: (args.steps or (6 if args.quick else 20)) if b == 1 else
             (args.steps_batch4 or (4 if args.quick else 5)) for b in batches}
    sg2_batches = [] if args.no_sg2 else [int(b) for b in (args.sg2_batches or ("" if args.quick else "1"))
                                          .split(",") if b]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    torch.manual_seed(0)
    log(f"StyleGAN v1 1024: {len(variants)} variants, batches {batches}, steps {steps}")
    rows = bench_family("stylegan1", variants, batches, steps, args.threads, log, args.device)
    if sg2_batches:
        log(f"StyleGAN2 config-f 1024: batches {sg2_batches}")
        rows += bench_family("stylegan2", SG2_VARIANTS, sg2_batches, {b: 4 for b in sg2_batches}, args.threads,
                             log, args.device)
    add_ratios(rows)

    env = {
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(), "platform": platform.platform(),
        "loadavg_end": os.getloadavg(), "seconds": time.time() - started,
        "args": vars(args),
    }
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "results": rows}, indent=1))
    print_table(rows)
    print(f"wrote {out} in {env['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
