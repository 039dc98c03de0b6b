# AnyFace: `make serve` runs the service on its embedded defaults, `make test` runs the test suite.
# Both create the virtualenv, install the project and fetch the pinned models when they are missing.

comma := ,
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= serve,dev,train,bench,load
export ANYFACE_MODEL_MIRROR ?= $(if $(wildcard ../shared/models),$(abspath ../shared/models),)
export ANYFACE_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: serve test install models system-deps triton-venv branches lint bench bench-index load train export evaluate clean

$(VENV)/.installed-$(subst $(comma),-,$(EXTRAS)): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(UV) pip install --quiet --python $(PY) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

models/manifest.json:
	$(MAKE) install EXTRAS=$(EXTRAS)
	$(PY) -m service.models fetch

models: install
	$(PY) -m service.models fetch

serve:
	$(MAKE) install EXTRAS=serve
	$(MAKE) models EXTRAS=serve
	$(PY) -m service

# redis-server (store tests) and promtool (deployment checks) come from Debian packages
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends redis-server prometheus \
	    >/dev/null || echo "warning: could not install redis-server/prometheus; their tests will skip"; \
	fi

triton-venv: .venv-triton/.bootstrapped
.venv-triton/.bootstrapped:
	bash tests/triton/bootstrap.sh

test: install system-deps triton-venv
	$(PY) -m service.models fetch
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check service training bench tests deploy
	$(VENV)/bin/mypy service bench

bench: install
	$(PY) -m service.models fetch
	$(PY) -m bench.run

bench-index: install
	$(PY) -m bench.index

load: install system-deps
	$(PY) -m deploy.locust.run_load

# BTNet branches for 56/28/14/7-pixel faces: aligned LFW crops (cached), distillation (resumable), fused export
# into models/ (manifest entries + Triton repository). Skipped when models/ already has them.
branches: install
	@if $(PY) -c "import sys; from pathlib import Path; from service.models.manifest import load_manifest; \
	  sys.exit(0 if load_manifest(Path('models')).embedders('btnet') else 1)"; then \
	  echo "BTNet branches already in models/"; else \
	  $(PY) -m service.models fetch && $(PY) -m training.data.lfw_crops && \
	  $(PY) -m training.distill --out runs/btnet_scan --resume --threads $$(nproc) && \
	  $(PY) -m training.export --run runs/btnet_scan; fi

train: install
	$(PY) -m service.models fetch
	$(PY) -m training.data.lfw_crops
	$(PY) -m training.distill --out runs/btnet_scan --resume
	$(PY) -m training.distill --conv plain --resolutions 14 7 --out runs/btnet_plain --resume

export: install
	$(PY) -m training.export --run runs/btnet_scan

evaluate: install
	$(PY) -m training.evaluate --run runs/btnet_scan --ablation runs/btnet_plain --rounds 150

clean:
	rm -rf $(VENV) .venv-triton .pytest_cache .mypy_cache .ruff_cache
