# Two commands for a new user: `make quickstart` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_VERSION   ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
DIGITS := data/digits/manifest.json

.PHONY: setup quickstart test clean

setup: $(STAMP)

# torch comes first and alone (--no-deps): a wheel already on this machine, else PyPI's CUDA build where
# there is a GPU, else PyTorch's CPU build; the second pip call then resolves its dependencies and the
# project's without ever replacing it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps --no-index torch==$(TORCH_VERSION) 2>/dev/null \
	  || { command -v nvidia-smi >/dev/null 2>&1 && $(BIN)/pip install -q --no-deps torch==$(TORCH_VERSION); } \
	  || $(BIN)/pip install -q --no-deps torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX)
	$(BIN)/pip install -q torch==$(TORCH_VERSION) -e '.[dev]'
	@touch $(STAMP)

$(DIGITS): | $(STAMP)
	$(BIN)/ganpipe data pack digits --out data/digits

quickstart: $(STAMP) $(DIGITS)
	$(BIN)/ganpipe train jobs/quickstart.yaml
	$(BIN)/ganpipe sample models:/gan-digits@champion -n 64 -o samples.png
	@echo "samples: $(CURDIR)/samples.png   MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 tests

clean:
	rm -rf data ray_results mlflow.db mlartifacts samples.png
