# ecoin: the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
# chromium and its driver: the dashboard's tests drive a real headless browser.
DEB_PKGS := mosquitto mosquitto-clients postgresql openssl chromium chromium-driver

.PHONY: setup test test-fast test-arm64 lint typecheck unit bench demo screenshot faults flash wheel clean

# The Python rooms (docs/ARCHITECTURE.md); firmware/ and boards/ are MicroPython, not linted here.
ROOMS := protocol common bank analyst gateway dashboard tools sim testing

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/setup-system.sh
	@sh deploy/setup-system.sh $(DEB_PKGS)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Both checks fail if they saw fewer files than the rooms hold (tests/checked_files.py).
lint: setup
	$(BIN)/ruff check $(ROOMS) tests bench
	$(BIN)/ruff format --check $(ROOMS) tests bench
	$(BIN)/ruff check --show-files $(ROOMS) tests bench | $(BIN)/python tests/checked_files.py ruff $(ROOMS) tests bench

# mypy maps modules to files by path, so it checks a tree of links build/typecheck/ecoin/<room>.
typecheck: setup
	@rm -rf build/typecheck && mkdir -p build/typecheck/ecoin
	@for r in $(ROOMS); do ln -s ../../../$$r build/typecheck/ecoin/$$r; done
	$(BIN)/mypy --linecount-report build/typecheck/report
	$(BIN)/python tests/checked_files.py mypy $(ROOMS) < build/typecheck/report/linecount.txt

# Test modules run JOBS at a time (pytest-xdist; a module stays in one process, so its
# fixtures are built once). Most of a test's time is spent waiting on real servers and
# MicroPython processes; JOBS=1 runs them one by one.
JOBS ?= 4
XDIST = $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)

unit: setup
	$(BIN)/pytest --ignore=tests/arm64 $(XDIST) $(PYTEST_ARGS)

# The gateway on a Raspberry Pi's architecture: arm64 under QEMU, in a Debian root built once
# per machine (deploy/arm64-root.sh: 9-14 min, kept in /var/cache/ecoin), then ~3 min a run.
test-arm64: setup
	@sh deploy/arm64-root.sh >/dev/null
	$(BIN)/pytest tests/arm64 $(PYTEST_ARGS)

test: lint typecheck unit test-arm64

# ecoin's wheel (build/dist/ecoin-*.whl): what a Raspberry Pi installs, with the gateway extra.
wheel: setup
	rm -rf build/dist
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w build/dist .

# The inner loop: everything not marked slow (under 90 s here). `make test` runs it all.
test-fast: setup
	$(BIN)/pytest -m 'not slow' $(XDIST) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run

# The demo also runs the dashboard and prints its address; DEMO_ARGS=--stay keeps it all up.
demo: setup
	$(BIN)/python -m ecoin.sim.demo $(DEMO_ARGS)

# docs/dashboard-owner.png and -operator.png from a short demo run, in headless Chromium.
screenshot: setup
	$(BIN)/python -m ecoin.sim.screenshot --out docs

# The demo's system under kill -9 and SIGSTOP of each part (docs/FAULTS.md): two runs of every
# fault, ~6 min; the table goes to build/faults/faults.md and faults.json. `make test` runs
# the short version (tests/e2e/test_faults_run.py).
faults: setup
	$(BIN)/python -m ecoin.sim.faults --runs 2 --workdir build/faults

BOARD ?= esp32
PORT  ?= /dev/ttyUSB0
flash: setup
	$(BIN)/ecoin-provision flash --board $(BOARD) --port $(PORT)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
