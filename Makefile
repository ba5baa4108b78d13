# headswap: two commands set everything up on a fresh machine.
#   make demo   install into .venv and run the main job
#   make test   install into .venv and run the fast tests (+ a slice of the slow ones)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-all lint docs data clean zoo-table zoo-coverage bench-train \
	bench-heads export-coverage bench-export

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster,export]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist); best effort, needs root.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "fashion-mnist: not installed (apt-get install dataset-fashion-mnist, or use --download)"; fi

demo: $(STAMP)
	$(PY) tools/swap_head.py resnet18 --head gmp --num-classes 10
	$(PY) tools/swap_head.py vit_small_patch16_224 --head gap --num-classes 10 --hidden 512 --dropout 0.5
	$(PY) tools/param_flop_table.py resnet18 mobilenetv3_small_100 --heads gap gmp flatten nin \
	    --num-classes 10 --sizes 224 288 --no-progress
	$(PY) tools/finetune.py resnet10t --head gap --dataset synthetic --epochs 1 --img-size 64 \
	    --out runs/demo --overwrite

bench-train: $(STAMP)
	$(PY) benchmarks/train_throughput.py

bench-heads: $(STAMP)
	$(PY) benchmarks/head_study_speed.py

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow or smoke" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check surgery analysis tools tests benchmarks
	$(VENV)/bin/mypy surgery analysis

# the documentation site (docs/ + mkdocs.yml) into site/; --strict: a broken link fails it
docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) tools/zoo_page.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

zoo-table: $(STAMP)
	$(PY) benchmarks/zoo_table_time.py --jobs 2

zoo-coverage: $(STAMP)
	$(PY) tools/zoo_coverage.py --jobs 2

# ONNX export + onnxruntime verification over a 100-architecture sample (resumes from the .jsonl)
export-coverage: $(STAMP)
	$(PY) tools/export_coverage.py --sample 100 --jobs 2

bench-export: $(STAMP)
	$(PY) benchmarks/export_latency.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info site
