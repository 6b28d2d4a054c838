# cohort-sync: `make demo` runs the main job on the built-in emulator; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CARGO ?= cargo

.PHONY: all build demo test lint venv bench schema clean

all: build

build:
	$(CARGO) build --release --locked

# Python tools the tests use as independent peers: pyarrow/DuckDB (Parquet readers), moto (S3 server).
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: build
	scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test: venv lint
	scripts/test.sh

bench: build venv
	scripts/bench.sh

# Regenerates schemas/pipeline.schema.json from the pipeline types (tests/config.rs fails
# while the committed file is stale; it never writes it).
schema:
	$(CARGO) run --locked --quiet --example write_schema

clean:
	$(CARGO) clean
	rm -rf $(VENV) demo-out
