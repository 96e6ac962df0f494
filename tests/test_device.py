"""Device choice and automatic batch size, in one place."""

from __future__ import annotations

import pytest
import torch

from pulse_cli.device import STEP_BYTES_1024, auto_batch_size, check_device_spec, resolve_device


def test_auto_is_the_cpu_on_a_machine_without_accelerators():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:3", "mps"])
def test_unavailable_accelerators_are_refused_with_advice(spec):
    if torch.cuda.is_available() or (spec == "mps" and torch.backends.mps.is_available()):
        pytest.skip("device present")
    with pytest.raises(ValueError, match="not available|no CUDA"):
        resolve_device(spec)


@pytest.mark.parametrize("resolve", [resolve_device, check_device_spec])
@pytest.mark.parametrize("spec", ["tpu", "cuda:", "cuda:x", "cpu:0", ""])
def test_unknown_device_names_list_the_choices(resolve, spec):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve(spec)


def test_a_ray_driver_checks_the_spelling_only():
    # the workers resolve the device on their machines: a driver without a GPU passes `cuda:1` on
    assert [check_device_spec(s) for s in (" Auto", "CPU", "cuda", "cuda:1", "MPS")] == \
        ["auto", "cpu", "cuda", "cuda:1", "mps"]


def test_auto_batch_size_is_one_on_the_cpu():
    assert auto_batch_size(torch.device("cpu"), family="stylegan1", resolution=1024) == 1


def test_auto_batch_size_fills_80_percent_of_free_gpu_memory():
    gib = 2**30
    cuda = torch.device("cuda")
    per_image = STEP_BYTES_1024["stylegan1"]
    free = 24 * gib
    size = auto_batch_size(cuda, family="stylegan1", resolution=1024, free_bytes=free)
    assert size * per_image <= 0.8 * free < (size + 1) * per_image
    # smaller images, more of them, up to the cap; a nearly full device still gets one
    assert auto_batch_size(cuda, family="stylegan1", resolution=256, free_bytes=free) == 16
    assert auto_batch_size(cuda, family="stylegan2", resolution=1024, free_bytes=gib // 2) == 1
