# Every target works on a fresh machine with only Python 3.11+: the virtual
# environment is made and filled here, never by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8080
FIELDSYNC_DB ?= var/fieldsync.db
FUZZ_SECONDS ?= 60
export FIELDSYNC_DB

.PHONY: run test test-long test-2g fuzz bench bench-quick clean browser translations screenshots \
        mutation test-converge

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fieldsync-server init
	$(BIN)/fieldsync-server serve --host 127.0.0.1 --port $(PORT)

# Shuffled order (pytest-randomly) with a new seed each run, printed at the top
# ("Using --randomly-seed=N"); the same seed drives hypothesis. Replay a run
# with `make test SEED=N`; PYTEST_ARGS adds pytest options (-x, -k, a path).
ifeq ($(origin SEED), undefined)
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
PYTEST_ARGS ?=

test: $(STAMP) browser
	@echo "Using --randomly-seed=$(SEED) (order and hypothesis); replay: make test SEED=$(SEED)"
	$(BIN)/python -m pytest -q -m "not slow and not net2g" -p randomly \
	  --randomly-seed=$(SEED) --hypothesis-seed=$(SEED) --hypothesis-profile=ci $(PYTEST_ARGS) \
	  || { echo "make test failed with SEED=$(SEED): replay with make test SEED=$(SEED)"; exit 1; }

# The console's browser tests drive Debian's chromium (Playwright with
# executable_path: no browser download). CI runs as root and installs it;
# anyone else is told what to install, and the browser tests fail until then.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update && apt-get install -y chromium chromium-driver fonts-noto-core; \
	else echo "The console's browser tests need chromium: sudo apt-get install -y \
	chromium fonts-noto-core (Debian/Ubuntu). They fail until it is installed."; fi

# The README's console screenshots, written by the browser tests.
screenshots: $(STAMP) browser
	FIELDSYNC_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q -p no:randomly \
	tests/test_console_browser.py tests/test_app_browser.py

# Console and device-app page strings, and the fieldsync command's own messages
# (domain "cli"): extract, merge into each catalog, compile the committed .mo files
# (shipped as package data; no build step at install).
translations: $(STAMP)
	$(BIN)/pybabel -q extract -F server/console/babel.cfg -k _ -k gettext \
	  -o server/console/translations/messages.pot .
	$(BIN)/pybabel -q update -i server/console/translations/messages.pot \
	  -d server/console/translations --width 100
	$(BIN)/pybabel -q compile -d server/console/translations
	$(BIN)/pybabel -q extract -F client_sync/app/babel.cfg -k _ -k gettext \
	  -o client_sync/app/translations/messages.pot .
	$(BIN)/pybabel -q update -i client_sync/app/translations/messages.pot \
	  -d client_sync/app/translations --width 100
	$(BIN)/pybabel -q compile -d client_sync/app/translations
	$(BIN)/pybabel -q extract -F client_sync/translations/babel.cfg -k _ -k N_ \
	  --no-default-keywords -o client_sync/translations/cli.pot --width 100 .
	$(BIN)/pybabel -q update -D cli -i client_sync/translations/cli.pot \
	  -d client_sync/translations --width 100
	$(BIN)/pybabel -q compile -D cli -d client_sync/translations

test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Convergence in every arrival order, the long run (README "Test"): the same
# three tests `make test` runs, with larger budgets and longer server-level
# histories. Not in .ci/run. SEED=N replays a run.
CONVERGE_EXAMPLES ?= 1000
CONVERGE_DEVICE_EXAMPLES ?= 100
MODEL_EXAMPLES ?= 100
test-converge: $(STAMP)
	@echo "Using --hypothesis-seed=$(SEED); replay: make test-converge SEED=$(SEED)"
	CONVERGE_EXAMPLES=$(CONVERGE_EXAMPLES) CONVERGE_DEVICE_EXAMPLES=$(CONVERGE_DEVICE_EXAMPLES) \
	  MODEL_EXAMPLES=$(MODEL_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:randomly \
	  --hypothesis-seed=$(SEED) --hypothesis-profile=ci \
	  tests/test_converge.py tests/test_converge_devices.py tests/test_client_model.py

# Root only (network namespaces, tc, iptables). As root the target installs
# Debian's iproute2, iptables and libnetfilter-queue-dev (and gcc: NetfilterQueue
# is built from source) when one is missing; anyone else is told. It fails,
# never skips, when the link cannot be built: see README "Test".
NET2G_APT := iproute2 iptables libnetfilter-queue-dev gcc libc6-dev
test-2g: $(STAMP)
	@if [ "$$(id -u)" != 0 ]; then echo "make test-2g needs root (network namespaces, tc, \
	iptables)"; exit 1; fi
	@if ! command -v tc >/dev/null || ! command -v iptables >/dev/null || ! command -v gcc \
	  >/dev/null || [ ! -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ]; then \
	  echo "installing $(NET2G_APT)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  $(NET2G_APT) >/dev/null || { echo "apt-get install $(NET2G_APT) failed"; exit 1; }; fi
	$(BIN)/python -m pip install --quiet NetfilterQueue==1.1.0 || { echo "test-2g needs \
	libnetfilter-queue-dev: apt-get install -y $(NET2G_APT)"; exit 1; }
	FIELDSYNC_REQUIRE_2G=1 $(BIN)/python -m pytest -q -s -m net2g

# Coverage-guided fuzzing (atheris) of push, pull and the device's reading
# of answers, FUZZ_SECONDS each; see fuzz/run.py. Then schemathesis over the
# whole OpenAPI document against the real server, FUZZ_API_EXAMPLES per
# operation and mode (`make test` runs 15).
FUZZ_API_EXAMPLES ?= 500
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet atheris==3.0.0
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)
	FUZZ_API_EXAMPLES=$(FUZZ_API_EXAMPLES) $(BIN)/python -m pytest -q -p no:randomly \
	  tests/test_api_fuzz.py -k whole_api

# Mutation testing (mutmut 3, into .venv only) of the modules that carry the
# promises: the merge, scope and role checks, auth, the write transaction and
# the durability PRAGMAs ([tool.mutmut] in pyproject.toml; docs/mutation.md).
# MUTANTS narrows the run, e.g. MUTANTS='schemas.merge*'; results: mutmut results.
MUTANTS ?=
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet mutmut==3.8.1
	$(BIN)/mutmut run --max-children 1 $(MUTANTS)
	$(BIN)/mutmut results

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants
