# Two commands on a fresh machine: `make run` (the service) and `make test` (the tests).
UV := scripts/uv
PYTEST_ARGS ?=

.PHONY: sync services browser run test test-cluster check validate-docs asyncapi bench bench-v2 wrk mutate mutate-domain screenshots

sync:
	@$(UV) sync --frozen --quiet --compile-bytecode

services:
	@scripts/services

# Debian's Chromium for the console's browser tests (installed when missing and we may).
browser:
	@scripts/chromium

run: sync services
	$(UV) run --frozen warden run

# The rules that guard accounts, tokens and repeats: every line and branch run by a test.
GATED := domain/auth.py,warden/security.py,storage/redis_store.py,handlers/idempotency.py,web/translate.py

# One combined report: the test process's data and that of every warden process it started.
test: sync services browser
	$(UV) run --frozen pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=80 $(PYTEST_ARGS)
	$(UV) run --frozen coverage report --include='$(GATED)' --fail-under=100

# Warden on a real three-node RabbitMQ cluster, nodes killed under load (tests/cluster). Starts
# the cluster with scripts/rabbit-cluster.sh unless it is up (needs root), and takes it down
# after unless WARDEN_CLUSTER_KEEP=1. About a minute and a half on top of the cluster's up/down.
test-cluster: sync services
	$(UV) run --frozen pytest -m cluster tests/cluster -p no:cacheprovider $(PYTEST_ARGS)

check: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy domain contract storage handlers web warden tests verifier/warden_verifier
	$(UV) run --frozen lint-imports
	.ci/validate-compose
	.ci/validate-docs

# The OpenAPI and AsyncAPI documents against the official validators (needs Node.js and npm:
# the AsyncAPI parser is installed from .ci/asyncapi/package-lock.json on first use).
validate-docs: sync
	.ci/validate-docs

# Mutation testing (scripts/mutate.py; README, "Mutation testing"). Fails when a module scores
# under 90 % or keeps a survivor that scripts/mutation_survivors.toml does not explain. CI runs
# the domain's use cases against the unit tests; `make mutate` runs every target, fast ones
# first (the Redis and idempotency ones take minutes: run them sparingly).
# MUTATE_ARGS: e.g. --max-children 1, or --only 'domain.auth.x*' to retest some mutants.
mutate-domain: sync
	$(UV) run --frozen python scripts/mutate.py run domain $(MUTATE_ARGS)

mutate: sync services
	$(UV) run --frozen python scripts/mutate.py run domain security redis idempotency $(MUTATE_ARGS)

# The console's screenshots in the README: the browser tests save the pages they visit.
screenshots: sync services browser
	rm -rf docs/console
	WARDEN_SCREENSHOTS=docs/console $(UV) run --frozen pytest -q -p no:cacheprovider tests/e2e/test_console.py

asyncapi: sync
	$(UV) run --frozen python -m handlers.asyncapi > asyncapi/asyncapi.json

# Warden against the fastapi-users peer, one sitting (not part of CI). Needs wrk: installed
# from the distribution's packages when missing and we may (root on Debian/Ubuntu).
bench: sync services wrk
	$(UV) run --frozen python -m bench.perf $(BENCH_ARGS)

# Every figure of issue 19's targets in one sitting (not part of CI; several minutes): the
# table above (BENCH_ARGS reach it), the verification mail's commit-to-SMTP latency, token
# introspection over AMQP, and the verifier library's tokens per CPU-second.
bench-v2: sync services wrk
	$(UV) run --frozen python -m bench.perf $(BENCH_ARGS)
	$(UV) run --frozen python -m bench.mail_latency
	$(UV) run --frozen python -m bench.introspect
	PYTHONPATH=verifier $(UV) run --frozen python -m bench.verifier --seconds 3 --repeat 3

# wrk, the HTTP load generator the benchmarks drive.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -qq wrk >/dev/null; } || { echo "bench needs wrk"; exit 1; }
