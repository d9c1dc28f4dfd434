# Everything a newcomer needs, on a fresh Debian/Ubuntu machine with Python 3.11+.
#   make study  -> set up .venv and run the default comparison study (HTML report in studies/default)
#   make test   -> set up .venv, install the system parts the tests use, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: setup system test fuzz study bench peers lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: these builds are the ones the project is tested with
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	# export --format tflite: litert-converter pins xdsl 0.28, which caps typing-extensions below 4.13, while Jupyter's
	# client needs 4.13+; xdsl runs with the newer one (the tflite tests check it), so it is put back after
	# (pip then reports the conflict in a few lines: expected)
	$(BIN)/python -m pip install -q -e '.[tflite]'
	$(BIN)/python -m pip install -q 'typing-extensions>=4.13'
	# ONNX Runtime Web for `export --format web`, from the npm registry, kept in the cache (works offline later)
	-$(BIN)/python -m cnnarena.export.web_runtime || echo "ONNX Runtime Web not fetched (no npm, or offline): export --format web will say so"
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST, Chromium, PostgreSQL (the tune tests' shared storage), a C compiler (for the fused training
# kernels) and npm come from Debian where apt is available (tests skip, saying why, elsewhere); only the missing
# ones are asked for, so a Node.js/npm installed another way (which Debian's npm conflicts with) is left alone.
system:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	  command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "apt-get not available as root: Fashion-MNIST / Chromium tests may skip"; fi

test: setup system
	$(BIN)/python -m tools.check_layers
	$(BIN)/python -m tools.structure --check
	# two workers of one thread each (pytest-xdist), a file per worker at a time; then, by themselves, the tests
	# timed against the clock or the machine's load (marked `alone`)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not alone"
	$(BIN)/python -m pytest -q -m alone

# The property-based tests with many more examples than the suite's fixed, derandomised budget (a few minutes).
fuzz: setup
	CNNARENA_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_fuzz.py

study: setup
	-@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi
	$(BIN)/cnnarena study --out studies/default

# cnnarena vs plain PyTorch vs Keras/TF, one table (+ benchmarks/results/latest.json); ~35 min, mostly the
# 10-epoch Keras run and the two fast presets. The Keras peer installs into its own venv,
# benchmarks/.venv-keras, on first use.
# Quick check: make bench BENCH_ARGS="--seconds 5 --keras-epochs 1 --fast-epochs 2"
bench: setup system
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Time to accuracy against fastai, Ultralytics, Keras and a plain PyTorch script, each a whole process in its own
# venv under benchmarks/ (made on first use, ~6 GB each); ~1 hour. Table and chart: python -m benchmarks.peers_report
peers: setup system
	$(BIN)/python -m benchmarks.peers $(PEERS_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks tools

clean:
	rm -rf $(VENV) runs studies .pytest_cache
