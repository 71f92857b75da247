# Two commands matter: `make run` and `make test`. Everything else is a step they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  := classifiers/model/triage_meta.json

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: run test setup model lint typecheck bench mutation clean imap-server chromium

# setuptools and wheel too: a test builds the project's wheel offline (tests/test_bench.py).
# mutmut is for `make mutation` only (a dev tool, not a runtime dependency).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,pgserver]' 'setuptools>=77' wheel pytest pytest-timeout 'hypothesis>=6.100' ruff mypy types-PyYAML 'mutmut>=3.8,<4'
	touch $(STAMP)

setup: $(STAMP)

# Training is seeded, but numpy's OpenBLAS picks its matrix kernels by CPU and they round
# differently: an AVX-512 machine trained a slightly different model from the same seed. Pinning
# the AVX2 kernels rebuilds the committed model byte for byte; without AVX2 nothing is pinned.
TRAIN_ENV := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo OPENBLAS_CORETYPE=Haswell)

# The default model ships in the repository; rebuild it only if it is missing.
$(MODEL): | $(STAMP)
	$(TRAIN_ENV) $(BIN)/triage train --starter-only --out classifiers/model

model: $(STAMP)
	$(TRAIN_ENV) $(BIN)/triage train --starter-only --out classifiers/model

run: $(STAMP) $(MODEL)
	$(BIN)/triage run

# The IMAP tests run against a real dovecot. Install it first only where we can (root with apt-get);
# elsewhere those tests skip and say how to enable them.
IMAP_SERVER := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && echo imap-server)

imap-server:
	@command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd; }

# The report test renders the page in a real headless browser (Debian's chromium), installed the
# same way: only where we can; elsewhere that test skips and says how to enable it.
BROWSER := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && echo chromium)

chromium:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: $(STAMP) $(MODEL) $(IMAP_SERVER) $(BROWSER)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy triage flows connectors classifiers

bench: $(STAMP) $(MODEL)
	$(BIN)/triage bench

# Mutation testing of the rule modules with the fast tests that cover them (README, "Mutation
# testing"); not part of `make test`. Ends with `mutation score: NN% (killed K of N)`.
mutation: $(STAMP) $(MODEL)
	$(BIN)/python -m tests.mutation

clean:
	rm -rf $(VENV) outbox triage.duckdb mutants
