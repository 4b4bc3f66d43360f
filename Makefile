# Entry points for people and CI. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo

# Build output lives outside the work tree so fresh clones and repeat runs
# on the same machine reuse it.
CARGO_TARGET_DIR ?= $(HOME)/.cache/sluice-target
export CARGO_TARGET_DIR

# `cargo install` puts tansu here; the tests look for it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

# Arguments for `make run`, e.g. make run ARGS="--help".
ARGS ?=
# Where the examples keep their RocksDB checkpoints by default.
CHECKPOINT_DIR ?= checkpoints

# Prerequisites run in the order written (setup, lint, tests).
.NOTPARALLEL:

.PHONY: help setup setup-lite run sessions windows trending pipe test test-only bench lint fmt clean-checkpoints

help:
	@echo "make setup              install build and test packages (chromium too) and the test brokers"
	@echo "make run ARGS='...'     run the wordcount example (release)"
	@echo "make sessions ARGS='...' run the sessions example (keyed state, release)"
	@echo "make windows ARGS='...'  run the window_counts example (event-time windows, release)"
	@echo "make trending ARGS='...' run the trending example (batch-time sliding window, release)"
	@echo "make pipe ARGS='...'     run the pipe example (topic to topic, exactly-once, release)"
	@echo "make test               setup, lint, then the whole test suite"
	@echo "make bench              run the in-memory and the Kafka benchmarks"
	@echo "make lint               rustfmt check and clippy -D warnings"
	@echo "make fmt                format the workspace"
	@echo "make clean-checkpoints  delete $(CHECKPOINT_DIR)/"

setup:
	scripts/setup.sh

# Only what compiling needs (libclang for RocksDB, OpenSSL and libcurl for
# the Kafka client); running the examples needs neither the test brokers nor
# the browser of the UI test, which `setup` adds.
setup-lite:
	scripts/setup.sh --system

run: setup-lite
	$(CARGO) run --release --example wordcount -- $(ARGS)

sessions: setup-lite
	$(CARGO) run --release --example sessions -- $(ARGS)

windows: setup-lite
	$(CARGO) run --release --example window_counts -- $(ARGS)

trending: setup-lite
	$(CARGO) run --release --example trending -- $(ARGS)

pipe: setup-lite
	$(CARGO) run --release --example pipe -- $(ARGS)

test: setup lint test-only

# --all-targets builds examples as test harnesses; the crash tests run the
# real example binaries, so build them first.
test-only: setup
	$(CARGO) build --example wordcount --example sessions --example window_counts --example clicks --example pipe --example trending
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

bench: setup
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench kafka_throughput
	$(CARGO) bench --bench kafka_sink
	$(CARGO) bench --bench dead_letters
	$(CARGO) bench --bench state
	$(CARGO) bench --bench windows

lint: setup-lite
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-checkpoints:
	rm -rf -- $(CHECKPOINT_DIR)
