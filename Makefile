# Two commands on a fresh machine: `make run` (the service) and `make test` (the tests).
UV := scripts/uv
PYTEST_ARGS ?=

.PHONY: sync services run test check asyncapi bench mutate mutate-domain

sync:
	@$(UV) sync --frozen --quiet --compile-bytecode

services:
	@scripts/services

run: sync services
	$(UV) run --frozen warden run

test: sync services
	$(UV) run --frozen pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=80 $(PYTEST_ARGS)
	$(UV) run --frozen coverage report --include='domain/auth.py,warden/security.py,storage/redis_store.py' --fail-under=100

check: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy domain storage handlers web warden
	$(UV) run --frozen lint-imports
	.ci/validate-compose

# Mutation testing (scripts/mutate.py; README, "Mutation testing"). Fails when a module scores
# under 90 % or keeps a survivor that scripts/mutation_survivors.toml does not explain. CI runs
# the domain's use cases against the unit tests; `make mutate` runs every target, fast ones
# first (the Redis and idempotency ones take minutes: run them sparingly).
# MUTATE_ARGS: e.g. --max-children 1, or --only 'domain.auth.x*' to retest some mutants.
mutate-domain: sync
	$(UV) run --frozen python scripts/mutate.py run domain $(MUTATE_ARGS)

mutate: sync services
	$(UV) run --frozen python scripts/mutate.py run domain security redis idempotency $(MUTATE_ARGS)

asyncapi: sync
	$(UV) run --frozen python -m handlers.asyncapi > asyncapi/asyncapi.json

# Warden against the fastapi-users peer, one sitting (not part of CI). Needs wrk: installed
# from the distribution's packages when missing and we may (root on Debian/Ubuntu).
bench: sync services
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -qq wrk >/dev/null; } || { echo "bench needs wrk"; exit 1; }
	$(UV) run --frozen python -m bench.perf $(BENCH_ARGS)
