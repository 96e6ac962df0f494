"""Finding and loading generator checkpoints, with their latent statistics.

Formats are recognised by content, never by file name (`detect`), and read without executing code from a
file (`read`). Latent statistics come from the first source `resolve_latent_stats` finds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import describe_os_error
from ..files.atomic import sha256_file
from ..networks.generator import Generator, LatentStats
from . import safetensors_file
from .detect import choose_in_folder, sniff
from .errors import CheckpointError
from .formats import (
    FORMAT_DESCRIPTIONS,
    FORMAT_PULSE,
    FORMAT_SAFETENSORS,
    GAUSSIAN_LATENT_FAMILIES,
    PULSE_GAUSSIAN_FIT,
    PULSE_MAPPING,
    PULSE_SYNTHESIS,
    LoadedNetworks,
)
from .latent_stats import (
    PULSE_SAMPLES,
    PULSE_SEED,
    check_finite,
    check_stats_fit,
    compute_latent_stats,
    read_gaussian_fit,
    save_latent_stats,
)
from .read import read_networks

__all__ = [
    "PULSE_GAUSSIAN_FIT",
    "PULSE_MAPPING",
    "PULSE_SYNTHESIS",
    "CheckpointError",
    "LoadedNetworks",
    "convert_checkpoint",
    "describe",
    "file_sha256",
    "latent_stats_for",
    "load_generator",
    "load_networks",
    "resolve_checkpoint_path",
    "resolve_latent_stats",
]

Notify = Callable[[str], None]
NameFamily = Callable[[Path], "str | None"]


def resolve_checkpoint_path(path: Path, name_family: NameFamily | None = None) -> Path:
    """A folder stands for the checkpoint `pulse` would pick inside it (PULSE's synthesis.pt, ...).

    `name_family(path)` may supply a family for files the content sniff cannot place (see `choose_in_folder`).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / PULSE_SYNTHESIS
        if candidate.is_file():
            return candidate
        found = choose_in_folder(path, name_family)
        if found is not None:
            return found
        raise CheckpointError(f"{path}: folder holds no generator checkpoint ({PULSE_SYNTHESIS}, *.safetensors, "
                              f"*.pkl, *.pt)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def latent_kind_of(path: Path, name_family: NameFamily | None = None) -> str:
    """"gaussian" when the checkpoint at `path` (file or folder) is of a family searched on one standard normal
    z (DCGAN), else "w+"; from a light content sniff, nothing loaded ("w+" when the sniff cannot tell)."""
    try:
        family = sniff(resolve_checkpoint_path(Path(path), name_family)).family
    except CheckpointError:
        return "w+"
    return "gaussian" if family in GAUSSIAN_LATENT_FAMILIES else "w+"


def load_networks(path: Path, name_family: NameFamily | None = None) -> LoadedNetworks:
    """Load the generator networks from a checkpoint path (file or folder), recognising the format by content.
    Every tensor is checked to be finite (see `check_finite`), whatever the family."""
    loaded = read_networks(resolve_checkpoint_path(Path(path), name_family))
    check_finite(loaded.generator.state_dict().items(), loaded.path)  # its statistics: in check_stats_fit
    return loaded


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so one load never hashes a file twice."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(Path(path))
    return _SHA_MEMO[key]


def _fit_beside(loaded: LoadedNetworks) -> Path | None:
    if not loaded.use_fit_beside:
        return None
    beside = loaded.path.with_name(PULSE_GAUSSIAN_FIT)
    return beside if beside.is_file() else None


def _cache_entry(loaded: LoadedNetworks, cache_dir: Path, samples: int) -> Path:
    assert loaded.mapping_path is not None
    suffix = "" if samples == PULSE_SAMPLES else f"-{samples}"
    return Path(cache_dir) / "latent-stats" / f"{file_sha256(loaded.mapping_path)}{suffix}.pt"


def _no_stats_message(loaded: LoadedNetworks) -> str:
    if loaded.format == FORMAT_PULSE:
        return (f"{loaded.path}: no latent statistics: put PULSE's {PULSE_GAUSSIAN_FIT} or the generator's "
                f"{PULSE_MAPPING} beside it, or pass --gaussian-fit PATH")
    return (f"{loaded.path}: no latent statistics and no mapping network to compute them from; "
            f"pass --gaussian-fit PATH")


# Where latent statistics came from (besides "--gaussian-fit PATH" and "gaussian_fit.pt beside the file").
IN_THE_FILE = "in the file"
CACHED = "cached"
COMPUTED = "computed"
TO_BE_COMPUTED = "computed on first use (then cached)"
NONE_FOUND = "none (pass --gaussian-fit PATH)"
STANDARD_NORMAL = "none needed: z is standard normal"


def resolve_latent_stats(loaded: LoadedNetworks, *, gaussian_fit: Path | None = None, cache_dir: Path | None = None,
                         samples: int = PULSE_SAMPLES, notify: Notify | None = None,
                         compute: bool = True) -> tuple[LatentStats | None, str]:
    """The latent statistics for `loaded` and where they came from, taken from the first that applies:
    an explicit file, the checkpoint itself (pulse's safetensors), gaussian_fit.pt beside the checkpoint
    (StyleGAN v1 only), the cache, or computed from the mapping network (then cached, keyed by the sha256 of
    the file holding the mapping).

    With `compute=False` nothing is computed: the statistics are None where they would be computed (origin
    "computed on first use ...") or cannot be (origin "none ..."). Otherwise the latter is a CheckpointError.
    """
    generator = loaded.generator
    if generator.latent_kind == "gaussian":  # DCGAN: the search runs on z itself, no fit applies
        if gaussian_fit is not None:
            raise CheckpointError(f"{loaded.path}: a {generator.family} generator searches its standard normal z "
                                  f"directly and takes no --gaussian-fit")
        return LatentStats(torch.zeros(generator.w_dim), torch.ones(generator.w_dim)), STANDARD_NORMAL
    if gaussian_fit is not None:
        explicit = read_gaussian_fit(gaussian_fit)
        return check_stats_fit(explicit, generator, gaussian_fit), f"--gaussian-fit {gaussian_fit}"
    if loaded.latent_stats is not None:
        return check_stats_fit(loaded.latent_stats, generator, loaded.path), IN_THE_FILE
    beside = _fit_beside(loaded)
    if beside is not None:
        return check_stats_fit(read_gaussian_fit(beside), generator, beside), f"{beside.name} beside the file"
    if loaded.mapping_path is None or generator.z_dim is None:
        if not compute:
            return None, NONE_FOUND
        raise CheckpointError(_no_stats_message(loaded))
    entry = _cache_entry(loaded, Path(cache_dir), samples) if cache_dir is not None else None
    try:
        cached = entry is not None and entry.is_file()
    except OSError:  # an unusable cache folder (no permission, a file in the way): compute instead
        cached = False
    if cached:
        try:
            return check_stats_fit(read_gaussian_fit(entry), generator, entry), CACHED
        except CheckpointError:
            pass  # a damaged cache entry is recomputed (and rewritten) below
    if not compute:
        return None, TO_BE_COMPUTED
    if notify is not None:
        notify(f"computing latent statistics from {loaded.mapping_path.name} "
               f"({samples:,} samples, once per checkpoint)")
    stats = compute_latent_stats(generator.map, generator.z_dim, samples=samples, device=generator.device)
    if entry is not None:
        try:
            save_latent_stats(stats, entry)
        except OSError as exc:  # the statistics are good; only the cache is unusable
            if notify is not None:
                notify(f"warning: could not cache the latent statistics ({describe_os_error(exc)}); "
                       f"they will be computed again next time (set PULSE_HOME to a writable folder)")
    return stats, COMPUTED


def latent_stats_for(loaded: LoadedNetworks, *, gaussian_fit: Path | None, cache_dir: Path | None,
                     samples: int = PULSE_SAMPLES, notify: Notify | None = None) -> LatentStats:
    """The statistics `resolve_latent_stats` finds (or computes) for `loaded`; CheckpointError when none."""
    stats, _origin = resolve_latent_stats(loaded, gaussian_fit=gaussian_fit, cache_dir=cache_dir, samples=samples,
                                          notify=notify)
    assert stats is not None  # with compute=True it is found, computed or an error
    return stats


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   gaussian_fit: str | Path | None = None, cache_dir: str | Path | None = None,
                   notify: Notify | None = None, fast: bool | None = None,
                   name_family: NameFamily | None = None) -> Generator:
    """Load a generator ready for the latent search: weights frozen, latent statistics attached.

    `generator.latent_stats_origin` says where the statistics came from (see `resolve_latent_stats`).
    Statistics computed from the mapping network are stored in `cache_dir` (when given) so they are
    computed once per checkpoint. `fast` chooses the generator's
    fast evaluation where it has one (None: where it has been verified, i.e. on the CPU; no GPU
    was available to verify CUDA or MPS).
    """
    loaded = load_networks(Path(path), name_family)
    generator = loaded.generator.to(device)
    stats, origin = resolve_latent_stats(loaded, gaussian_fit=Path(gaussian_fit) if gaussian_fit else None,
                                         cache_dir=Path(cache_dir) if cache_dir is not None else None, notify=notify)
    assert stats is not None  # with compute=True it is found, computed or an error
    generator.latent_stats = stats.to(device)
    generator.latent_stats_origin = origin
    generator.source = str(loaded.path)
    generator.source_sha256 = file_sha256(loaded.path)
    if fast is None:
        fast = torch.device(device).type == "cpu"
    return generator.use_fast_path(fast)


def convert_checkpoint(src: str | Path | LoadedNetworks, dst: str | Path, *, gaussian_fit: str | Path | None = None,
                       cache_dir: str | Path | None = None, samples: int = PULSE_SAMPLES,
                       metadata: dict[str, str] | None = None, notify: Notify | None = None) -> Path:
    """Write any supported checkpoint as pulse's single safetensors file, latent statistics included.

    `metadata` adds or overrides fields (source, licence, training_data, ...). Metadata already in a pulse
    safetensors source is kept. `src` may be networks already loaded with `load_networks`. Returns the
    written path.
    """
    loaded = src if isinstance(src, LoadedNetworks) else load_networks(Path(src))
    stats, origin = resolve_latent_stats(loaded, gaussian_fit=Path(gaussian_fit) if gaussian_fit else None,
                                         cache_dir=Path(cache_dir) if cache_dir is not None else None,
                                         samples=samples, notify=notify)
    if origin == STANDARD_NORMAL:
        stats_note, stats = STANDARD_NORMAL, None  # nothing to store
    elif origin == IN_THE_FILE:
        stats_note = loaded.metadata.get("latent_stats", "carried over")
    elif origin in (CACHED, COMPUTED):
        stats_note = f"computed by pulse: {samples} samples, seed {PULSE_SEED}"
    else:  # read from a file: the one given, or gaussian_fit.pt beside the checkpoint
        stats_note = f"from {Path(gaussian_fit).name if gaussian_fit is not None else PULSE_GAUSSIAN_FIT}"
    generator = loaded.generator
    from ..version import __version__

    keep = dict(loaded.metadata) if loaded.format == FORMAT_SAFETENSORS else {}
    keep.pop("format", None)
    keep.pop("format_version", None)
    meta = {
        "source": loaded.path.name,
        "source_format": loaded.format,
        "source_sha256": file_sha256(loaded.path),
        **keep,
        "family": generator.family,
        "resolution": str(generator.resolution),
        "num_ws": str(generator.num_ws),
        "w_dim": str(generator.w_dim),
        "z_dim": str(generator.z_dim) if generator.z_dim is not None else "none",
        "latent_stats": stats_note,
        "created_by": f"pulse-cli {__version__}",
        **(metadata or {}),
    }
    dst = Path(dst)
    # every file the source is read from: the checkpoint and its companions (mapping, latent statistics)
    sources = {"the source checkpoint": loaded.path, "the source's mapping network": loaded.mapping_path,
               "the source's latent statistics": Path(gaussian_fit) if gaussian_fit else _fit_beside(loaded)}
    for role, source in sources.items():
        if source is not None and dst.exists() and source.exists() and os.path.samefile(dst, source):
            raise CheckpointError(f"{dst}: refusing to overwrite {role}")
    try:
        safetensors_file.write_file(dst, generator.to("cpu"), stats, meta)
    except OSError as exc:
        raise CheckpointError(f"{dst}: cannot write ({exc.strerror or exc})") from None
    return dst


def count_parameters(generator: Generator) -> int:
    return sum(p.numel() for p in generator.parameters())


def describe(path: str | Path, *, cache_dir: str | Path | None = None) -> dict[str, object]:
    """Facts about a checkpoint for `pulse weights info` (loads the networks, computes nothing)."""
    loaded = load_networks(Path(path))
    _stats, stats_origin = resolve_latent_stats(loaded, cache_dir=Path(cache_dir) if cache_dir is not None else None,
                                                compute=False)
    g = loaded.generator
    return {
        "path": str(loaded.path),
        "format": loaded.format,
        "format_description": FORMAT_DESCRIPTIONS.get(loaded.format, loaded.format),
        "family": g.family,
        "resolution": g.resolution,
        "num_ws": g.num_ws,
        "w_dim": g.w_dim,
        "z_dim": g.z_dim,
        "noise_layers": len(g.noise_shapes(1)),
        "parameters": count_parameters(g),
        "size_bytes": os.path.getsize(loaded.path),
        "sha256": file_sha256(loaded.path),
        "mapping": str(loaded.mapping_path) if loaded.mapping_path is not None else None,
        "latent_stats": stats_origin,
        "metadata": dict(loaded.metadata),
    }
