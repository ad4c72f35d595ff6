# Everything a researcher runs. Variables: METHOD, METHODS (reproduce: "aurl tsformer"; default
# all), PROFILE (quick|default|paper), SEEDS,
# DATA, DATASET, BACKBONE (a local Hugging Face model directory: causal LM, ViT or BERT), DEVICES, ACCELERATOR, STRATEGY, NUM_NODES, PRECISION, TUNED=1,
# TRIALS and ROW (sweep), MLFLOW_TRACKING_URI, OPTUNA_STORAGE.
PYTHON ?= python3
ROOT   := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
VENV   ?= $(ROOT).venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
METHOD ?= aurl
PROFILE ?= default

ARGS = --profile $(PROFILE) \
	$(if $(SEEDS),--seeds $(SEEDS)) $(if $(DATA),--data $(DATA)) \
	$(if $(DATASET),--dataset $(DATASET)) $(if $(BACKBONE),--backbone $(BACKBONE)) \
	$(if $(DEVICES),--devices $(DEVICES)) \
	$(if $(ACCELERATOR),--accelerator $(ACCELERATOR)) $(if $(STRATEGY),--strategy $(STRATEGY)) \
	$(if $(NUM_NODES),--num-nodes $(NUM_NODES)) $(if $(PRECISION),--precision $(PRECISION)) \
	$(if $(filter 1 yes true,$(TUNED)),--tuned) $(if $(JOBS),--jobs $(JOBS))
TRIALS ?= 20

.PHONY: setup bench report sweep reproduce dashboard list ui test lint clean

setup: $(STAMP)

# torch first, from the pinned CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(ROOT)pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '$(ROOT)[dev]'
	touch $(STAMP)

bench: setup
	$(BIN)/harness bench $(METHOD) $(ARGS)

report: setup
	$(BIN)/harness report $(METHOD) $(ARGS)

sweep: setup
	$(BIN)/harness sweep $(METHOD) $(ARGS) --trials $(TRIALS) $(if $(ROW),--row $(ROW))

# every benchmark (or METHODS="aurl tsformer") in PROFILE, its report and claims verdicts, then
# reports/REPRODUCTION.md; finished runs are skipped, so rerunning resumes
reproduce: setup
	$(BIN)/harness reproduce $(METHODS) $(ARGS)

dashboard: setup
	$(BIN)/optuna-dashboard $${OPTUNA_STORAGE:-sqlite:///optuna.db} --host 127.0.0.1 --port $${PORT:-8080}

list: setup
	$(BIN)/harness list

ui: setup
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port $${PORT:-5000}

# one pytest worker per core (at most 4; pytest-xdist), idle workers stealing queued tests from
# busy ones (the slow subprocess tests cluster at the end of the alphabet), the slowest listed
test: setup
	cd $(ROOT) && $(BIN)/pytest -q -n auto --maxprocesses=4 --dist worksteal --durations=15

lint: setup
	cd $(ROOT) && $(BIN)/ruff check .

clean:
	rm -rf .cache runs reports
