# Everything runs in a local virtual environment (.venv), created on first use.
# TORCH_SPEC pins the torch build installed before the package; the default is the CPU build this
# project's CI uses. On a GPU machine: make install TORCH_SPEC=torch (or your CUDA wheel).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: install test test-kernels test-quick demo demo-untrained lint bench bench-quick bench-search bench-quality bench-scale bench-threads check-gpu clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The kernels a CPU without AVX-512 runs (AVX2) and the x86 baseline (SSE4.1, pinned as the fixtures README
# says), forced before Python starts: the numerics-sensitive tests run again under each, so a machine with
# AVX-512 cannot pass what a user's CPU fails. AVX-512 and AVX2 kernels fuse multiply-adds (one rounding),
# ATen's baseline kernels do not (two): a bound that holds by one rounding's luck at LeakyReLU's kink shows here.
AVX2_KERNELS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
SSE41_KERNELS := ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: install
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-kernels

# Only the tests marked `numerics`, under the AVX2 and the SSE4.1 kernels.
test-kernels: install
	env $(AVX2_KERNELS) $(BIN)/python -m pytest -m numerics -q
	env $(SSE41_KERNELS) $(BIN)/python -m pytest -m numerics -q

test-quick: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check pulse_cli tests bench examples

# Faces: the small trained DCGAN (downloaded once through pip, see README) on 8x8 crops of its own faces.
DEMO_MODEL := weights/dcgan-digiface-64.safetensors
$(DEMO_MODEL): | install
	$(BIN)/pulse weights download dcgan-digiface-64 --dest weights

demo: install $(DEMO_MODEL)
	$(BIN)/python examples/face_crops.py $(DEMO_MODEL) $(DEMO_OUT) --seeds 1-6 --size 8
	$(BIN)/pulse upsample $(DEMO_OUT)/crops $(DEMO_OUT)/faces --checkpoint $(DEMO_MODEL) \
		--samples 3 --sheet --batch-size 6 --report --check-face
	@echo "contact sheet: $(DEMO_OUT)/faces/sheet.png, all results: $(DEMO_OUT)/faces/report.html (the faces the crops came from: $(DEMO_OUT)/true-faces/)"
	@echo "on both: where the three samples of a crop disagree (the map: invented detail) and whether dlib's face-recognition measure takes them for different people (docs/invented.md)"

# No download: the untrained demo StyleGAN on the example crops (the mechanics, not faces).
demo-untrained: install
	$(BIN)/pulse demo-generator weights/demo
	$(BIN)/pulse upsample examples/crops $(DEMO_OUT)/untrained --checkpoint weights/demo/synthesis.pt --batch-size 4 --samples 2 --report
	@echo "results in $(DEMO_OUT)/untrained/ (images, logs/, results.jsonl; open report.html)"

bench: install
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/pool.py

bench-quick: install
	$(BIN)/python bench/bench.py --quick

# --search pulse vs robust on generator-made targets and the example crops (~30 min on 2 CPU cores).
bench-search: install
	$(BIN)/python bench/search.py

# Search quality on 48 faces of dcgan-digiface-64 (8x8 and 16x16 crops): eps reached, dlib finds a face, identity
# distances; pulse vs robust (~5 min on 1 thread). Then what is invented (bench/invented.py, ~7 min on 1 thread):
# where 3 samples per crop disagree, inside and outside the face, and whether they are different people.
# Results in bench/README.md.
bench-quality: install $(DEMO_MODEL)
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/invented.py

# --threads 1 and 2 (OpenMP spinning, short spin, passive) against auto, on the DCGAN, the demo StyleGAN and one
# full-size step, idle and with two CPU-bound processes competing; the faster of 2 interleaved runs each
# (~17 min on 2 cores; run it on a quiet machine).
bench-threads: install $(DEMO_MODEL)
	$(BIN)/python bench/threads.py --repeat 2

# Images per hour with 1 and 2 processes (--shard, a shared OUT) and --ray local --workers 2 (~3 min on 2 cores).
bench-scale: install
	$(BIN)/python bench/scale.py

# First run on a GPU machine: the engine's device tests with the GPU required (PULSE_REQUIRE_GPU=1 turns
# "no CUDA/MPS device" from a skip into a failure), then the quick benchmark on the GPU.
# GPU_DEVICE=cuda:1 picks another card for the benchmark.
GPU_DEVICE ?= cuda
check-gpu: install
	PULSE_REQUIRE_GPU=1 $(BIN)/python -m pytest -v -rs tests/test_engine_devices.py
	$(BIN)/python bench/bench.py --device $(GPU_DEVICE) --quick --out bench/results_gpu.json

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache *.egg-info
