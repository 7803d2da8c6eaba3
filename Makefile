# Sluice: make run (set up and run the service), make test (set up and run every test), make bench.
# With DATABASE_URL unset, each target starts a throwaway local PostgreSQL and removes it afterwards.
SHELL := /bin/bash
SWIFT ?= swift
export SLUICE_LOG_LEVEL ?= info

.PHONY: all deps build release run test bench soundness clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product sluice

run: release
	scripts/postgres.sh run scripts/run-service.sh

test: deps
	SLUICE_NEEDS_SYSTEMD=1 scripts/install-deps.sh
	scripts/check-schema-version.sh
	scripts/check-openapi.sh
	scripts/check-alert-rules.sh
	scripts/install-python-tools.sh
	$(SWIFT) build --build-tests
	scripts/verify-unit.sh
	scripts/postgres.sh run $(SWIFT) test --skip-build

# make bench runs every part; make bench BENCH=webhooks (or queue, pool, depth, ...) runs some.
bench: deps
	SLUICE_NEEDS_WRK=1 scripts/install-deps.sh
	$(SWIFT) build -c release --product SluiceBench
	$(SWIFT) build -c release --product sluice
	scripts/postgres.sh run .build/release/SluiceBench $(BENCH)

soundness:
	scripts/soundness.sh

clean:
	rm -rf .build
