# The two commands: `make demo` runs the system, `make test` passes the tests.
# Both create .venv and install what they need first (see README).

PYTHON ?= python3
# Some environments (this VM's among them) set PYTHONDONTWRITEBYTECODE=1: then every process
# compiles our modules from source each time it starts, about 70 ms of a 280 ms
# `pushauth-agent` run and 110 ms of a broker's start, paid by each of the thousand-odd
# processes a test run starts. Everything make runs may keep bytecode in __pycache__/.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the demo needs only the runtime packages; the tests add the `test`
# extra (pytest, Playwright, ...) on top. Either is redone when pyproject.toml changes.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# Four workers on two cores, one test file each at a time: most tests wait on real
# servers, subprocesses and the 10 s shortest challenge lifetime rather than compute,
# and module-scoped fixtures stay within one worker. Measured on this 2-core VM: 8 min
# 15 s with two workers, 6 min 45 s with three (README, "Tests"); 2026-12-05, with one
# broker per module where tests allow it: pytest 385 s against 470 s before;
# 2026-12-06 on a slower VM: 525 and 570 s with three, 458 s with four (the two cores
# 1.7 busy: user + sys 788 s in 461 s). Later that day, a slower VM again: 650-700 s
# (1,025 s of CPU: Chromium 320, agent runs 240, broker starts 130); with the headless
# shell and bytecode kept, 512-534 s (850 s of CPU). 2026-12-06 afternoon: `rp` commands
# of broker and demo RP without the server's imports, 518 s (851 s of CPU); three shuffled
# runs (`make stress N=3 SHUFFLE=1`) 551-572 s. 2026-12-06 13:30, a faster VM (Ed25519
# signing 20.4 us): 353 s; of the CPU (process accounting), agent runs 25%, Chromium 23%,
# broker processes 19%, the workers 17%; offline agent commands now skip the network
# imports (0.16 -> 0.10 s a run).
# --no-loadscope-reorder: the files in tests/conftest.py's order, longest first (from
# tests/file_seconds.json), not xdist's (most tests first, which left the long browser
# files for the end).
XDIST := -n 4 --dist loadfile --no-loadscope-reorder

.PHONY: demo test stress lint format install install-runtime clean webapp

# uv installs what pyproject.toml lists in 5 s where pip took 40 s on this VM, the same
# versions from the same index (PyPI); a tenth of a clean `make test`. pip stays the
# fallback: where uv cannot be installed or fails, pip installs the same.
UV := $(BIN)/uv pip install --quiet --native-tls --python $(BIN)/python
install_packages = { [ -x $(BIN)/uv ] && $(UV) $(1); } || $(BIN)/pip install --quiet $(1)
# The project is installed editable as a plain path in a .pth file (setuptools' "compat"
# mode), not through the import hook setuptools installs by default: that hook costs
# every Python process about 13 ms of CPU at start (it imports pathlib, re, fnmatch and
# importlib.util), and the agent, the PAM helper and the tests start thousands of them.
EDITABLE := -C editable_mode=compat -e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.9' || echo "uv not installed: pip installs the packages"
	$(call install_packages,$(EDITABLE) .)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(call install_packages,$(EDITABLE) '.[test]')
	touch $(TEST_STAMP)

install-runtime: $(STAMP)

install: $(TEST_STAMP)

# The web authenticator's QR decoder (jsQR), pinned by device_agent/webapp_build/package-lock.json.
webapp:
	@scripts/build-webapp

demo: install-runtime webapp
	@scripts/ensure-tools runtime
	$(BIN)/pushauth-demo

test: install webapp
	@scripts/ensure-tools test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	# A failed test's logs are kept in artifacts/failed/<test id>/ and named at the end.
	rm -rf artifacts/failed
	$(BIN)/pytest $(XDIST)

# The suite N times in a row (SHUFFLE=1: each run in a random order); prints each
# test's failure count and the runs it failed in. See README, "Tests".
N ?= 5
stress: install webapp
	@scripts/ensure-tools test
	$(BIN)/python scripts/stress --runs $(N) $(if $(filter 1 yes true,$(SHUFFLE)),--shuffle) -- $(XDIST)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
