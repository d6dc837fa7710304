# The virtual environment lives in .venv; every target builds it on demand. `make demo` alone
# uses .venv-demo, which holds the package and nothing else, so a first demo starts quickly.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
# The Pythons that pyproject.toml's classifiers claim besides $(PYTHON)'s (3.11, which runs the
# whole suite); tests/test_packaging.py checks that the two lists agree.
OTHER_PYTHONS := 3.12 3.13

.PHONY: test lint typecheck pytest pythons demo docs dist bench clean venv chaos chaos-replicated

venv: $(STAMP)

# pip first: dependency groups (--group) need pip >= 25.1.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]' --group dev --group docs --group bench
	touch $(STAMP)

# The package and its own dependencies only: no extras, no groups, and the venv's own pip.
$(DEMO_STAMP): pyproject.toml
	@echo "Installing gomaster alone into $(DEMO_VENV) (once; make venv installs the tools)"
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q -e .
	touch $(DEMO_STAMP)

test: lint typecheck pytest pythons

lint: $(STAMP)
	$(BIN)/ruff check gomaster tests bench docs/recipes

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# The core and SQLite tests on each of $(OTHER_PYTHONS), in throwaway venvs.
pythons:
	.ci/other-pythons $(OTHER_PYTHONS)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/gomaster demo

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# Benchmarks on throwaway servers (about 25 minutes); writes docs/benchmarks.md and docs/img/.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q --group bench
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench --out docs/benchmarks.md --img docs/img $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache

# The seeded simulation at scale: 10^6 events per seed must show no broken guarantee; then a
# backend clock stepped beyond the safety margin, to show the elector detecting it (overlaps
# are expected there: that run breaks an assumption of guarantee 1 on purpose).
sim: $(STAMP)
	$(BIN)/python -m tests.core.simulation --seeds 2 --steps 1000000
	$(BIN)/python -m tests.core.simulation --seeds 2 --steps 1000000 --notify
	-$(BIN)/python -m tests.core.simulation --seeds 1 --steps 200000 --clock-step 0.6 | head -1

# Fault injection on every backend with real servers and real processes (tests/chaos): writes
# docs/reliability.md and fails when any guarantee broke. 5 x 1,000 faults took 48 minutes on the
# 2-core development machine with 4 groups per backend, one of them asyncio applications (9-11
# minutes per backend: faults wait for a replaced node to boot); liveness figures need a quiet
# machine.
CHAOS_BACKENDS ?= sqlite,mysql,mongodb,postgresql,redis
CHAOS_FAULTS ?= 1000
CHAOS_GROUPS ?= 4
# Of those, groups of asyncio applications (gomaster.aio work as a task in the node's loop).
CHAOS_AIO_GROUPS ?= 1
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run --backends $(CHAOS_BACKENDS) --faults $(CHAOS_FAULTS) \
		--groups $(CHAOS_GROUPS) --aio-groups $(CHAOS_AIO_GROUPS) --out docs/reliability.md

# The primary of a replicated store failed over under a running election (tests/chaos/failover.py):
# FAILOVER_SYNC rounds with synchronous replication settings, then FAILOVER_ASYNC with
# asynchronous ones, on a primary and a replica started here; writes docs/failover/$(BACKEND).md
# and fails when a synchronous run shows an overlap, a token regression or a repeated token.
# BACKEND is postgresql, mysql or redis; the time each took is in its page (10-12 min for
# 100 + 50 here). The replica lags FAILOVER_LAG seconds each way; the far-replica pages came from
# FAILOVER_SYNC=0 FAILOVER_LAG=0.2 FAILOVER_PAGE=$(BACKEND)-lag200.
FAILOVER_SYNC ?= 100
FAILOVER_ASYNC ?= 50
FAILOVER_LAG ?= 0.05
FAILOVER_PAGE ?= $(BACKEND)
chaos-replicated: $(STAMP)
	@test -n "$(BACKEND)" || { echo "say which: make chaos-replicated BACKEND=postgresql|mysql|redis"; exit 2; }
	$(BIN)/python -m tests.chaos.failover --backend $(BACKEND) --sync $(FAILOVER_SYNC) \
		--async $(FAILOVER_ASYNC) --lag $(FAILOVER_LAG) --out docs/failover/$(FAILOVER_PAGE).md
