# One command each: `make app` (set up + launch the app), `make test` (set up + run the tests), `make train`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EDGE_VENV ?= .venv-edge
BUILD_VENV ?= .venv-build
RUN ?= runs/default
PORT ?= 8501

.PHONY: test lint train scan convert app build bench bench-quick clean-venv pi-check

# A virtual environment made from scratch, rebuilt whenever a requirements file changes.
# The test environment holds every stage (training, conversion, the app) and the dev tools.
$(VENV)/.installed: requirements-train.txt requirements-edge.txt requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-train.txt -r requirements-edge.txt -r requirements-dev.txt
	touch $@

# The app's own environment: the runtime-only requirements, never TensorFlow.
$(EDGE_VENV)/.installed: requirements-edge.txt
	rm -rf $(EDGE_VENV)
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EDGE_VENV)/bin/python -m pip install --quiet -r requirements-edge.txt
	touch $@

# The desktop build's environment: the app's requirements plus PyInstaller; never TensorFlow.
$(BUILD_VENV)/.installed: requirements-edge.txt requirements-build.txt
	rm -rf $(BUILD_VENV)
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BUILD_VENV)/bin/python -m pip install --quiet -r requirements-edge.txt -r requirements-build.txt
	touch $@

test: $(VENV)/.installed $(EDGE_VENV)/.installed $(BUILD_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	@SMEARSCOPE_EDGE_PYTHON=$(EDGE_VENV)/bin/python SMEARSCOPE_BUILD_PYTHON=$(BUILD_VENV)/bin/python $(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

# Convert the default run to the app's int8 bundle with the drift gate; writes edge_app/models/default/.
convert: $(VENV)/.installed
	$(BIN)/python -m convert --run $(RUN) --out edge_app/models/default

# The older runtime for the comparison: tflite-runtime 2.14 needs numpy<2 (wheels for Python <= 3.11).
TFRT_VENV := .venv-bench-tflite-runtime
$(TFRT_VENV)/.installed: requirements-bench-tflite-runtime.txt
	rm -rf $(TFRT_VENV)
	$(PYTHON) -m venv $(TFRT_VENV)
	$(TFRT_VENV)/bin/python -m pip install --quiet -r requirements-bench-tflite-runtime.txt || \
		echo "warning: tflite-runtime could not be installed here; that variant will be skipped" >&2
	touch $@

# Benchmarks: every variant on the manifest's test split; writes bench/results/<date>-<host>.json and .md.
bench: $(VENV)/.installed $(TFRT_VENV)/.installed
	$(BIN)/python -m bench

bench-quick: $(VENV)/.installed
	$(BIN)/python -m bench --quick

# Launch the app on the bundled default model at http://127.0.0.1:$(PORT) (settings: edge_app/launcher.py); a port
# in use is named with `make app PORT=...` (SMEARSCOPE_LAUNCHED_BY tells the launcher it was started by make).
app: $(EDGE_VENV)/.installed
	SMEARSCOPE_LAUNCHED_BY=make $(EDGE_VENV)/bin/python -m edge_app.launcher --port $(PORT)

# The desktop executable: dist/smearscope/ (one folder) and dist/smearscope-<version>-<platform>.tar.gz.
build: $(BUILD_VENV)/.installed
	$(BUILD_VENV)/bin/python build/build.py

# The app's inference core on linux-aarch64 (Raspberry Pi 4 and 5 CPUs) under qemu-user, no Pi needed: --selftest and
# the test split, compared with x86 (docs/desktop.md). Sysroot and wheels cached in .pi-sysroot/; PI_CPUS, PI_LIMIT.
pi-check: $(EDGE_VENV)/.installed
	EDGE_PYTHON=$(CURDIR)/$(EDGE_VENV)/bin/python bash build/pi_check.sh

lint: $(VENV)/.installed
	$(BIN)/ruff check .

# Train the default model (about 36 minutes on 2 CPU cores shared with another run); writes $(RUN)/.
train: $(VENV)/.installed
	$(BIN)/python -m train --out $(RUN)

# Only scan, group duplicates and split: writes $(RUN)/manifest.csv and the dataset report.
scan: $(VENV)/.installed
	$(BIN)/python -m train --out $(RUN) --scan-only

clean-venv:
	rm -rf $(VENV)
