# jpegfreq: `make demo` and `make test` each set everything up on a fresh machine:
# system libraries (apt, when missing), a virtual environment, the C extension.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision pinned: this pair installs from the local disk on the project machines
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: all sysdeps venv build demo test bench bench-loader fuzz fuzz-py detect-demo clean

RUNS ?= 100000

all: build

# libjpeg-turbo headers (build), libturbojpeg (PyTurboJPEG, spatial path),
# cjpeg/jpegtran (tests write every JPEG kind), pkg-config (finds libjpeg).
sysdeps:
	@missing=""; \
	[ -f /usr/include/jpeglib.h ] || missing="$$missing libjpeg62-turbo-dev"; \
	ldconfig -p | grep -q libturbojpeg || missing="$$missing libturbojpeg0"; \
	command -v cjpeg >/dev/null || missing="$$missing libjpeg-turbo-progs"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "please install:$$missing (Debian/Ubuntu names; needs root)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml setup.py | sysdeps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH) numpy pillow "PyTurboJPEG>=1.7,<2" tqdm matplotlib pycocotools pytest jpeg2dct==0.2.4 setuptools
	touch $(STAMP)

venv: $(STAMP)

build: venv
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .

demo: build
	$(BIN)/python train.py --demo

test: build
	$(BIN)/python -m pytest -q tests

# figures for the README's tables, on a folder of JPEGs you provide (run on a quiet machine):
#   make bench DATA=/path/to/jpegs
bench:
	@if [ -z "$(DATA)" ]; then \
	  echo "make bench needs a folder of JPEG files: make bench DATA=/path/to/jpegs" >&2; exit 2; fi
	@if [ ! -d "$(DATA)" ]; then echo "make bench: DATA=$(DATA) is not a directory" >&2; exit 2; fi
	$(MAKE) --no-print-directory build
	$(BIN)/python bench/bench_reader.py "$(DATA)"
	$(BIN)/python bench/bench_cube.py "$(DATA)"
	$(BIN)/python bench/bench_early_stop.py "$(DATA)"
	$(BIN)/python bench/bench_threads.py "$(DATA)"
	$(BIN)/python bench/check_equivalence.py "$(DATA)"
	$(BIN)/python bench/model_table.py

# loader throughput beside torchvision and NVIDIA DALI's CPU pipeline; DALI is installed into
# the venv here only (a peer to measure against, never a dependency):
#   make bench-loader DATA=/path/to/jpegs
bench-loader:
	@if [ -z "$(DATA)" ] || [ ! -d "$(DATA)" ]; then echo "make bench-loader needs DATA=FOLDER" >&2; exit 2; fi
	$(MAKE) --no-print-directory build
	$(BIN)/pip install -q nvidia-dali-cuda120
	$(BIN)/python bench/bench_loader.py "$(DATA)" --epochs 3 --rounds 3 --repeat 4
	$(BIN)/python bench/bench_int8.py "$(DATA)"

# libFuzzer + ASan + UBSan on the C core (installs clang when missing): make fuzz RUNS=1000000
fuzz: venv
	PY=$(BIN)/python sh fuzz/run.sh $(RUNS)

# atheris on the Python entry points that take untrusted input: make fuzz-py RUNS=1000000
fuzz-py: build
	$(BIN)/pip install -q atheris
	mkdir -p fuzz/build fuzz/artifacts
	$(BIN)/python fuzz/fuzz_py.py --seeds fuzz/build/corpus-py
	nice -n 10 $(BIN)/python fuzz/fuzz_py.py -runs=$(RUNS) -max_len=65536 -print_final_stats=1 -artifact_prefix=fuzz/artifacts/py- fuzz/build/corpus-py

# Mask R-CNN-DCT on a synthetic COCO-format set (about half an hour on 2 CPU cores)
detect-demo: build
	$(BIN)/python detect.py --workers 1

clean:
	rm -rf build *.egg-info jpegfreq/*.so
