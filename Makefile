PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tests' OTLP receiver (tests/e2e/test_e2e_traces.py): Arize Phoenix, a real trace store with a
# query API. Test-only, and in a venv of its own: it pins what our tests use differently (anthropic<2),
# and its licence (Elastic License 2.0) is fine for a tool the tests run, not for what we ship.
PHOENIX := $(VENV)/phoenix
PHOENIX_VERSION := 20.26.1

.PHONY: run test unit bench soak local-models proto clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# xds-protos (tests only) ships an older copy of opentelemetry/proto; the OpenTelemetry
	# exporters need their own: reinstalled last, so install order cannot decide which one wins.
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	test -x $(PHOENIX)/bin/python || $(PYTHON) -m venv $(PHOENIX)
	$(PHOENIX)/bin/python -m pip install --quiet 'arize-phoenix==$(PHOENIX_VERSION)'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cascade-extproc up $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast part: pure modules and the checks of what ships (no Envoy, no servers on ports).
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# bench/floor.py builds the C++ floor (bench/floor/build.sh, Debian's grpc++ packages) and uses
# LiteLLM's proxy when bench/litellm.sh has installed it; each column is left out otherwise.
bench: $(STAMP)
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/lua.py
	$(BIN)/python bench/workload.py

soak: $(STAMP)
	$(BIN)/python bench/load.py --requests 20000 --concurrency 64 --fault-rate 0.01

# llama-server (built from the llama-cpp-python sdist) and SmolLM2's weights, into
# ~/.cache/cascade-extproc: once per machine. The local-model tests and docs/quality.md use them.
local-models: $(STAMP)
	$(BIN)/python scripts/local_models.py build

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
