# One command each: `make test` (set up + run the tests), `make train`, `make app` (added by the app issue).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/default

.PHONY: test lint train scan clean-venv

# A virtual environment made from scratch, rebuilt whenever a requirements file changes.
$(VENV)/.installed: requirements-train.txt requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-train.txt -r requirements-dev.txt
	touch $@

test: $(VENV)/.installed
	$(BIN)/ruff check .
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

lint: $(VENV)/.installed
	$(BIN)/ruff check .

# Train the default model (about 15 minutes on 2 CPU cores); writes $(RUN)/.
train: $(VENV)/.installed
	$(BIN)/python -m train --out $(RUN)

# Only scan, group duplicates and split: writes $(RUN)/manifest.csv and the dataset report.
scan: $(VENV)/.installed
	$(BIN)/python -m train --out $(RUN) --scan-only

clean-venv:
	rm -rf $(VENV)
