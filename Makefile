# ecoin: the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
DEB_PKGS := mosquitto mosquitto-clients postgresql openssl

.PHONY: setup test lint typecheck unit bench demo flash clean

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/setup-system.sh
	@sh deploy/setup-system.sh $(DEB_PKGS)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check ecoin tests bench
	$(BIN)/ruff format --check ecoin tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: setup
	$(BIN)/python -m bench.run

demo: setup
	$(BIN)/python -m ecoin.tools.demo

BOARD ?= esp32
PORT  ?= /dev/ttyUSB0
flash: setup
	$(BIN)/ecoin-provision flash --board $(BOARD) --port $(PORT)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
