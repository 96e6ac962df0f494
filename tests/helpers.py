"""Shared test utilities: tiny StyleGAN v1 networks in PULSE's on-disk layout, device-tagged tensor files.

The state-dict layout here is written out by hand from PULSE's key names (and checked against the real
FFHQ 1024 manifest in test_stylegan1.py), so it does not come from the code under test.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

TINY_CHANNELS = {4: 16, 8: 16, 16: 8, 32: 8}  # resolution 32 -> num_ws 8
TINY_W_DIM = 32
TINY_MAPPING_LAYERS = 2


def load_pt(path: Path) -> Any:
    """A reference fixture or test file, read as data only, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def ffhq_channels(resolution: int = 1024, fmap_base: int = 8192, fmap_max: int = 512) -> dict[int, int]:
    """Channels per block as StyleGAN v1 sets them: min(fmap_base / 2**stage, fmap_max), stage = log2(res)-1."""
    return {2**k: min(int(fmap_base / 2 ** (k - 1)), fmap_max) for k in range(2, int(math.log2(resolution)) + 1)}


def synthesis_shapes(channels: dict[int, int], w_dim: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of PULSE's synthesis.pt for a network with these channels."""
    shapes: dict[str, tuple[int, ...]] = {}
    for res in sorted(channels):
        c = channels[res]
        p = f"blocks.{res}x{res}."
        if res == 4:
            shapes[p + "const"] = (1, c, 4, 4)
            shapes[p + "bias"] = (c,)
            shapes[p + "conv.weight"] = (c, c, 3, 3)
            shapes[p + "conv.bias"] = (c,)
        else:
            shapes[p + "conv0_up.weight"] = (c, channels[res // 2], 3, 3)
            shapes[p + "conv0_up.bias"] = (c,)
            shapes[p + "conv0_up.intermediate.kernel"] = (1, 1, 3, 3)
            shapes[p + "conv1.weight"] = (c, c, 3, 3)
            shapes[p + "conv1.bias"] = (c,)
        for epi in ("epi1", "epi2"):
            shapes[p + f"{epi}.noise.weight"] = (c,)
            shapes[p + f"{epi}.style_mod.lin.weight"] = (2 * c, w_dim)
            shapes[p + f"{epi}.style_mod.lin.bias"] = (2 * c,)
    last = channels[max(channels)]
    shapes["torgb.weight"] = (3, last, 1, 1)
    shapes["torgb.bias"] = (3,)
    return shapes


def mapping_shapes(dims: list[int]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        shapes[f"dense{i}.weight"] = (fan_out, fan_in)
        shapes[f"dense{i}.bias"] = (fan_out,)
    return shapes


def blur_kernel() -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    return (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)


def random_state_dicts(channels: dict[int, int] | None = None, w_dim: int = TINY_W_DIM,
                       mapping_layers: int = TINY_MAPPING_LAYERS, z_dim: int | None = None,
                       seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random (StyleGAN-initialised) synthesis and mapping state dicts in PULSE's layout."""
    channels = channels or TINY_CHANNELS
    z_dim = z_dim or w_dim
    rng = torch.Generator().manual_seed(seed)
    synthesis: dict[str, torch.Tensor] = {}
    for key, shape in synthesis_shapes(channels, w_dim).items():
        if key.endswith("intermediate.kernel"):
            synthesis[key] = blur_kernel()
        elif key.endswith("bias") or key.endswith("noise.weight"):
            synthesis[key] = 0.1 * torch.randn(shape, generator=rng)
        else:  # raw weights: unit normal, the equalised learning rate scales them at run time
            synthesis[key] = torch.randn(shape, generator=rng)
    mapping: dict[str, torch.Tensor] = {}
    for key, shape in mapping_shapes([z_dim] + [w_dim] * mapping_layers).items():
        if key.endswith("bias"):
            mapping[key] = 0.1 * torch.randn(shape, generator=rng)
        else:  # StyleGAN's init for lr multiplier 0.01: std 1/0.01
            mapping[key] = torch.randn(shape, generator=rng) / 0.01
    return synthesis, mapping


@contextlib.contextmanager
def storages_tagged(tag: str) -> Iterator[None]:
    """While active, torch.save records every storage as living on `tag` (e.g. 'cuda:0')."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: tag
    try:
        yield
    finally:
        torch.serialization.location_tag = original


def save_tensor_file(obj: Any, path: Path, *, legacy: bool = False, device_tag: str | None = None) -> Path:
    """torch.save in zip (default) or legacy format, optionally with storages tagged `device_tag`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with storages_tagged(device_tag) if device_tag else contextlib.nullcontext():
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_pulse_checkpoint(folder: Path, synthesis: dict[str, torch.Tensor],
                           mapping: dict[str, torch.Tensor] | None, *, legacy: bool = False,
                           device_tag: str | None = None) -> Path:
    """synthesis.pt (+ mapping.pt) in `folder` as PULSE distributes them; returns the synthesis path."""
    folder = Path(folder)
    if mapping is not None:
        save_tensor_file(mapping, folder / "mapping.pt", legacy=legacy, device_tag=device_tag)
    return save_tensor_file(synthesis, folder / "synthesis.pt", legacy=legacy, device_tag=device_tag)


def face_target(size: int, *, crop: tuple[int, int, int, int] = (160, 20, 320, 180)) -> torch.Tensor:
    """A real face (skimage astronaut), cropped and box-resized to size x size, [3, size, size] in [0, 1]."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).crop(crop).resize((size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def write_fake_stylegan3_pickle(path: Path, monkeypatch) -> Path:
    """A stylegan3-repo network pickle in miniature: `synthesis.input` (Fourier features) and L{i}_{size}_{ch}
    layers, each network pickled as torch_utils.persistence._reconstruct_persistent_obj(meta) like NVIDIA's.

    The persistence function lives in a stand-in module (installed with `monkeypatch`) and is never
    called: our loader must refuse the file from its content alone."""
    import pickle
    import sys
    import types

    def _reconstruct_persistent_obj(meta: Any) -> Any:  # pragma: no cover - never called by our loader
        raise AssertionError

    module = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    package = types.ModuleType("torch_utils")
    package.persistence = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)

    class Persistent:
        def __init__(self, class_name: str, params: dict[str, Any], modules: dict[str, Any]) -> None:
            self.meta = {"type": "class", "version": 6, "module_src": "# omitted", "class_name": class_name,
                         "state": {"_parameters": params, "_buffers": {}, "_modules": modules}}

        def __reduce__(self) -> Any:
            return _reconstruct_persistent_obj, (self.meta,)

    fc = Persistent("FullyConnectedLayer", {"weight": torch.zeros(4, 8), "bias": torch.zeros(4)}, {})
    synthesis = Persistent("SynthesisNetwork", {}, {
        "input": Persistent("SynthesisInput", {"freqs": torch.zeros(8, 2)}, {"affine": fc}),
        "L0_36_512": Persistent("SynthesisLayer", {"weight": torch.zeros(4, 4, 3, 3)}, {}),
    })
    generator = Persistent("Generator", {}, {"synthesis": synthesis,
                                             "mapping": Persistent("MappingNetwork", {}, {"fc0": fc})})
    path.write_bytes(pickle.dumps({"G": generator, "D": None, "G_ema": generator, "augment_pipe": None},
                                  protocol=4))
    return path


def random_crop(size: int = 16, seed: int = 0) -> Image.Image:
    """A small RGB input of seeded noise: the CLI tests' stand-in for a face crop."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def write_crops(folder: Path, count: int, size: int = 16, name: str = "{k}.png") -> Path:
    """`count` random crops in `folder` (created), named by `name.format(k=...)`, seeds 0..count-1."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        random_crop(size, seed=k).save(folder / name.format(k=k))
    return folder


def read_records(out: Path) -> list[dict]:
    """Every line of OUT/results.jsonl."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def strict_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed strictly (no NaN/Infinity, nothing torn): what jq accepts."""
    def refuse(name):
        raise AssertionError(f"{name} in {path}")

    text = path.read_text("ascii")
    assert text == "" or text.endswith("\n"), "torn last line"
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def one_error_line(stderr: str) -> str:
    """The one `error:` line of a command's stderr (and no traceback)."""
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


def same_images(a: Path, b: Path, names: list[str]) -> bool:
    """Whether the result images of `names` are pixel-identical in two output folders."""
    return all(np.array_equal(np.asarray(Image.open(a / f"{n}.png")), np.asarray(Image.open(b / f"{n}.png")))
               for n in names)


def tiny_generator():
    """A tiny StyleGAN v1 with random weights and latent statistics from a few samples (as PULSE makes them)."""
    from pulse_cli.checkpoints.latent_stats import compute_latent_stats
    from pulse_cli.networks.stylegan1 import StyleGAN1Generator

    gen = StyleGAN1Generator.from_state_dicts(*random_state_dicts())
    gen.latent_stats = compute_latent_stats(gen.map, gen.z_dim, samples=4096)
    return gen


def in_float64(generator):
    """A float64 copy of a generator and its statistics (where batching changes results by ~1e-13)."""
    import copy

    from pulse_cli.networks.generator import LatentStats

    gen = copy.deepcopy(generator).double()
    gen.latent_stats = LatentStats(generator.latent_stats.mean.double(), generator.latent_stats.std.double())
    return gen


def three_targets() -> torch.Tensor:
    """Three 8x8 crops of a real photo: the face, the top-left and the bottom-right corner."""
    return torch.stack([face_target(8), face_target(8, crop=(0, 0, 256, 256)),
                        face_target(8, crop=(256, 256, 512, 512))])


def dcgan_state_dict(nz: int = 8, ngf: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random 64x64 DCGAN generator state dict in the PyTorch tutorial's key layout, written out by hand:
    `main.{0,3,6,9,12}.weight` transposed-conv kernels [in, out, 4, 4] (no bias), `main.{1,4,7,10}.*` batch
    norms with running statistics."""
    rng = torch.Generator().manual_seed(seed)
    channels = [nz, ngf * 8, ngf * 4, ngf * 2, ngf, 3]
    sd: dict[str, torch.Tensor] = {}
    for stage, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        sd[f"main.{3 * stage}.weight"] = 0.3 * torch.randn((c_in, c_out, 4, 4), generator=rng)
        if stage < 4:
            bn = f"main.{3 * stage + 1}."
            sd[bn + "weight"] = 1 + 0.1 * torch.randn((c_out,), generator=rng)
            sd[bn + "bias"] = 0.1 * torch.randn((c_out,), generator=rng)
            sd[bn + "running_mean"] = 0.1 * torch.randn((c_out,), generator=rng)
            sd[bn + "running_var"] = 1 + torch.rand((c_out,), generator=rng)
            sd[bn + "num_batches_tracked"] = torch.tensor(1000)
    return sd


def dcgan_reference(sd: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The tutorial's forward pass with functional ops (eval-mode batch norm): z [B, nz] -> [B, 3, 64, 64]."""
    import torch.nn.functional as F

    x = z[:, :, None, None]
    for stage in range(5):
        x = F.conv_transpose2d(x, sd[f"main.{3 * stage}.weight"], stride=1 if stage == 0 else 2,
                               padding=0 if stage == 0 else 1)
        if stage < 4:
            bn = f"main.{3 * stage + 1}."
            x = F.relu(F.batch_norm(x, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"],
                                    sd[bn + "bias"], training=False, eps=1e-5))
    return torch.tanh(x)


_PULSE_IN_A_FRESH_PROCESS = """
import json, sys
from pulse_cli.cli.app import app
try:
    app(json.loads(sys.argv[1]))
except SystemExit as exit:
    print(json.dumps({"code": exit.code, "torch": "torch" in sys.modules}))
"""


def pulse_in_a_fresh_process(args: list[str], cwd: Path) -> tuple[dict[str, Any], str]:
    """Run `pulse ARGS` in a new interpreter (PULSE_HOME in `cwd`, 80 columns): its exit code and whether it
    imported torch, and its stderr."""
    result = subprocess.run([sys.executable, "-c", _PULSE_IN_A_FRESH_PROCESS, json.dumps(args)], capture_output=True,
                            text=True, cwd=cwd, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PULSE_HOME": str(cwd / "h"), "COLUMNS": "80"})
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stderr
