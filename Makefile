# dind-injector: `make run` starts the injector locally, `make test` runs every test.
CARGO ?= cargo

.PHONY: test test-deps run certs bench golden fixtures lint fmt

## Run every test: unit, fixtures and golden files, properties, CLI, HTTPS server, real dockerd.
test: test-deps
	DIND_INJECTOR_REQUIRE_DOCKERD=1 $(CARGO) test --locked --all-targets

## Install what the tests need beyond Rust (Debian's docker.io, openssl, gcc).
test-deps:
	@sh scripts/install-test-deps.sh

## Criterion benchmarks of the decision and the whole review (numbers in README.md).
bench:
	$(CARGO) bench --locked --bench decision

## Accept a change of injected output: rewrite tests/golden/ (review the diff first).
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test inject_fixtures golden

## Refresh the project's copy of the shared fixtures.
fixtures:
	cp -r ../shared/fixtures/. tests/fixtures/

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt
