# dind-injector: `make run` starts the injector locally, `make test` runs every test.
CARGO ?= cargo

.PHONY: test test-deps run certs bench golden fixtures lint fmt deploy

## Run every test: unit, fixtures and golden files, properties, CLI, HTTPS server, real dockerd.
test: test-deps
	$(CARGO) build --locked --benches
	DIND_INJECTOR_REQUIRE_DOCKERD=1 $(CARGO) test --locked --lib --bins --tests

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
