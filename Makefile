# cohort-sync: `make demo` runs the main job on the built-in emulator; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CARGO ?= cargo

.PHONY: all build demo test lint venv bench schema fuzz mutants clean

all: build

build:
	$(CARGO) build --release --locked

# Python tools the tests use as independent peers: pyarrow/DuckDB (Parquet readers), moto (S3 server).
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

# Azurite (the Azure Blob Storage emulator) for the store tests, pinned by package-lock.json.
tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --silent
	touch $@

venv: $(VENV)/.installed tests/node/node_modules/.installed

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

# Fuzzes each target for FUZZ_SECONDS (default 60). Needs a nightly toolchain and
# cargo-fuzz (`rustup toolchain install nightly && cargo install cargo-fuzz`). Inputs
# found grow fuzz/corpus/<target>/ (not committed); a crash lands in
# fuzz/artifacts/<target>/ and stops the run: fix it, then keep the input in
# fuzz/regressions/<target>/, which `make test` replays on stable (tests/fuzz_regressions.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := csv_to_arrow reverse_source pipeline api_answers
fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  $(CARGO) +nightly fuzz run $$t corpus/$$t regressions/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -max_len=65536 || exit 1; \
	done

# Mutation testing of the crash-safety core with cargo-mutants (`cargo install
# cargo-mutants`); scope and known-equivalent mutants in .cargo/mutants.toml. Slow (hours
# on 2 cores), so not part of `make test`. Extra arguments: MUTANTS_ARGS="--file src/state/lease.rs".
mutants: venv
	scripts/mutants.sh $(MUTANTS_ARGS)

clean:
	$(CARGO) clean
	rm -rf $(VENV) demo-out
