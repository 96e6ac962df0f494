"""The checkpoint formats pulse reads, by name, and what reading one gives (`LoadedNetworks`).

Formats are recognised by content, never by file name (`detect`), and read without running code (`read`):

* ``pulse`` (StyleGAN v1): PULSE's ``synthesis.pt`` (``blocks.4x4.const`` ...), ``mapping.pt`` beside it;
* ``lernapparat`` (StyleGAN v1): ``karras2019stylegan-ffhq-1024x1024.for_g_all.pt``, ``g_mapping.`` /
  ``g_synthesis.`` keys, noise weights under ``epiN.top_epi.noise``;
* ``sg1-tf`` (StyleGAN v1) / ``sg2-tf`` (StyleGAN2): NVIDIA's TensorFlow pickles ``(G, D, Gs)``;
* ``sg2ada`` (StyleGAN2): stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles (``G_ema``);
* ``rosinality`` (StyleGAN2): rosinality/stylegan2-pytorch ``{"g_ema", "latent_avg", ...}``;
* ``nvidia-state-dict`` (StyleGAN2): a bare ``G_ema.state_dict()`` saved with torch.save;
* ``dcgan-torch`` (DCGAN): the PyTorch DCGAN tutorial's generator state dict (``main.0.weight`` ...), bare
  or under ``netG_state_dict`` as its training checkpoints save it;
* ``pulse-safetensors`` (any family): pulse's own single file (see `safetensors_file`).

StyleGAN3 generators are recognised and refused with `SG3_MESSAGE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..networks.generator import Generator, LatentStats

PULSE_SYNTHESIS = "synthesis.pt"
PULSE_MAPPING = "mapping.pt"
PULSE_GAUSSIAN_FIT = "gaussian_fit.pt"

FORMAT_PULSE = "pulse"
FORMAT_LERNAPPARAT = "lernapparat"
FORMAT_SG1_TF = "sg1-tf"
FORMAT_SG2_TF = "sg2-tf"
FORMAT_SG2ADA = "sg2ada"
FORMAT_SG3 = "sg3"
FORMAT_ROSINALITY = "rosinality"
FORMAT_NVIDIA_SD = "nvidia-state-dict"
FORMAT_SAFETENSORS = "pulse-safetensors"
FORMAT_DCGAN = "dcgan-torch"
DCGAN_CHECKPOINT_KEY = "netG_state_dict"  # the tutorial's training checkpoints: {"netG_state_dict": ..., ...}

# Files recognised as something other than a generator.
PULSE_MAPPING_DATA = "pulse-mapping"
GAUSSIAN_FIT_DATA = "gaussian-fit"
TF_PICKLE_OTHER = "tf-pickle"

# The generator family of each format's files (pulse's safetensors files say theirs in the metadata).
FORMAT_FAMILIES = {
    FORMAT_PULSE: "stylegan1",
    PULSE_MAPPING_DATA: "stylegan1",
    FORMAT_LERNAPPARAT: "stylegan1",
    FORMAT_SG1_TF: "stylegan1",
    FORMAT_SG2_TF: "stylegan2",
    FORMAT_SG2ADA: "stylegan2",
    FORMAT_ROSINALITY: "stylegan2",
    FORMAT_NVIDIA_SD: "stylegan2",
    FORMAT_DCGAN: "dcgan",
}

# Families whose generator is searched on one standard normal z (networks.Generator.latent_kind "gaussian").
GAUSSIAN_LATENT_FAMILIES = ("dcgan",)

FORMAT_DESCRIPTIONS = {
    FORMAT_PULSE: "PULSE synthesis.pt (+ mapping.pt)",
    FORMAT_LERNAPPARAT: "lernapparat StyleGAN v1 conversion (for_g_all.pt)",
    FORMAT_SG1_TF: "NVIDIA StyleGAN v1 TensorFlow pickle",
    FORMAT_SG2_TF: "NVIDIA StyleGAN2 TensorFlow pickle",
    FORMAT_SG2ADA: "stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickle",
    FORMAT_SG3: "StyleGAN3 pickle (not supported)",
    FORMAT_ROSINALITY: "rosinality stylegan2-pytorch checkpoint",
    FORMAT_NVIDIA_SD: "NVIDIA StyleGAN2 G_ema state dict",
    FORMAT_SAFETENSORS: "pulse single-file safetensors",
    FORMAT_DCGAN: "PyTorch DCGAN tutorial generator (state dict or netG_state_dict checkpoint)",
}

EXPECTED = ("expected PULSE's synthesis.pt, a pulse .safetensors file, an NVIDIA StyleGAN v1/StyleGAN2 "
            "network pickle, a lernapparat for_g_all.pt, a rosinality stylegan2-pytorch checkpoint or a "
            "PyTorch-tutorial DCGAN generator")

SG3_MESSAGE = ("StyleGAN3 generators are not supported: they have no noise inputs (PULSE optimises per-layer "
               "noise) and a different synthesis network; use a StyleGAN2 or StyleGAN v1 checkpoint")
# StyleGAN3's synthesis network: a Fourier-feature `input` layer, then layers named L{idx}_{size}_{channels}.
SG3_KEY_PREFIXES = ("synthesis.input.", "synthesis.L0_")


@dataclass
class LoadedNetworks:
    """What a checkpoint file gave: the generator (no statistics yet) and where its mapping came from.

    `mapping_path` is the file holding the mapping network (PULSE's mapping.pt, or the checkpoint itself for
    single-file formats); None when the mapping was not loaded. `latent_stats` are set when the file carries
    them. `use_fit_beside`: whether a `gaussian_fit.pt` beside the file applies to this generator.
    """

    generator: Generator
    path: Path
    mapping_path: Path | None
    format: str = FORMAT_PULSE
    latent_stats: LatentStats | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    use_fit_beside: bool = True

