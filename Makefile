# AnyFace: `make serve` runs the service on its embedded defaults, `make test` runs the test suite.
# Both create the virtualenv, install the project and fetch the pinned models when they are missing.

comma := ,
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= serve,dev,train,bench,load,milvus
export ANYFACE_MODEL_MIRROR ?= $(if $(wildcard ../shared/models),$(abspath ../shared/models),)
export ANYFACE_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: serve test install models system-deps console-shots triton-venv branches branches-ci lint bench bench-tiny bench-index bench-cpu load train export evaluate variants clean fuzz

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

# redis-server (store tests), promtool (deployment checks) and chromium (the console's browser tests) come from
# Debian packages
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends redis-server prometheus \
	    chromium >/dev/null || echo "warning: could not install redis-server/prometheus/chromium; their tests will skip"; \
	fi

triton-venv: .venv-triton/.bootstrapped
.venv-triton/.bootstrapped:
	bash tests/triton/bootstrap.sh

test: install system-deps triton-venv
	$(PY) -m service.models fetch
	$(PY) -m pytest -q

# The long fuzz stage: Schemathesis rounds (examples, coverage, fuzzing, stateful) against a real service process
# until 20,000+ requests; fails on any 5xx or schema violation and writes the counts into docs/reliability.md.
# (`make test` runs a ~2 minute round: tests/fuzz/test_fuzz.py.)
FUZZ_REQUESTS ?= 20000
fuzz: install
	$(PY) -m service.models fetch
	$(PY) -m tests.fuzz.run --requests $(FUZZ_REQUESTS) --doc docs/reliability.md

lint: install
	$(VENV)/bin/ruff check service training bench evaluation tests deploy client
	$(VENV)/bin/mypy service training bench evaluation client

bench: install
	$(PY) -m service.models fetch
	$(PY) -m bench.run

# Tiny faces end to end through the API (LFW photos shrunk to 12/16/24/32 px faces, per configuration of
# bench/tiny_faces.py CONFIGS): detection recall and rank-1, written to docs/tiny_faces.md and docs/tiny_faces.png.
bench-tiny: install
	$(PY) -m service.models fetch
	$(PY) -m bench.tiny_faces

bench-index: install
	$(PY) -m bench.index
	$(PY) -m bench.engines

load: install system-deps
	$(PY) -m deploy.locust.run_load

# CPU per request (identify, verify, enrol) one at a time and under load, split by pipeline stage, and a py-spy
# flame graph of identify under load: docs/performance.md explains the figures (raw results in runs/cpu/).
bench-cpu: install system-deps
	$(PY) -m service.models fetch
	$(PY) -m bench.cpu_cost --label current --flame docs/flame_after.png

# BTNet branches for 56/28/14/7-pixel faces: aligned LFW crops (cached), distillation (resumable), fused export
# into models/ (manifest entries + Triton repository). BRANCH_PROFILE names the schedule in training.config.PROFILES:
# `full` (default, runs/btnet_scan) or `ci` (`make branches-ci`, runs/btnet_ci: the short one .ci/run uses).
# Skipped when models/ already has branches of that profile (or full ones). One single-threaded process per core,
# each training one branch at a time (`--jobs`): on shared cores that beats one process with many threads.
BRANCH_PROFILE ?= full
BRANCH_RUN ?= $(if $(filter full,$(BRANCH_PROFILE)),runs/btnet_scan,runs/btnet_$(BRANCH_PROFILE))
branches: install
	@if $(PY) -m training.export --installed $(BRANCH_PROFILE); then \
	  echo "BTNet branches ($(BRANCH_PROFILE) profile or full) already in models/"; else \
	  $(PY) -m service.models fetch && $(PY) -m training.data.lfw_crops && \
	  $(PY) -m training.distill --profile $(BRANCH_PROFILE) --out $(BRANCH_RUN) --resume --threads 1 --jobs $$(nproc) && \
	  $(PY) -m training.export --run $(BRANCH_RUN); fi

branches-ci:
	$(MAKE) branches BRANCH_PROFILE=ci

train: install
	$(PY) -m service.models fetch
	$(PY) -m training.data.lfw_crops
	$(PY) -m training.distill --out runs/btnet_scan --resume
	$(PY) -m training.distill --conv plain --resolutions 14 7 --out runs/btnet_plain --resume

export: install
	$(PY) -m training.export --run runs/btnet_scan

evaluate: install
	$(PY) -m training.evaluate --run runs/btnet_scan --ablation runs/btnet_plain --rounds 150

# The attention embedders (docs/variants.md): fine-tune the controls, SRANet, HPDA and ARFace (every seed of
# training/variants/schedule.json) and their ablations (first seed) from the pretrained trunk, export each into
# models/ (ANYFACE_EMBEDDER=<variant> serves it), evaluate everything against the trunk and write the table into
# docs/variants.md; then the attention pictures. Resumable: finished runs and evaluations are reused.
variants: install
	$(PY) -m service.models fetch
	$(PY) -m training.run_variants --doc docs/variants.md
	$(PY) -m training.evaluation.attention_maps --model runs/variants/sranet/seed0/model.pt
	$(PY) -m training.evaluation.hpda_masks
	$(PY) -m training.evaluation.arface_masks

clean:
	rm -rf $(VENV) .venv-triton .pytest_cache .mypy_cache .ruff_cache

# The web console's screenshots for the README and docs/console.md: its browser tests, writing into docs/console/
console-shots: install system-deps
	$(PY) -m service.models fetch
	ANYFACE_CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest -q -s tests/console
