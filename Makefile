# Two commands on a fresh machine: `make run` (the service) and `make test` (the tests).
UV := scripts/uv
PYTEST_ARGS ?=

.PHONY: sync services run test check asyncapi bench

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

asyncapi: sync
	$(UV) run --frozen python -m handlers.asyncapi > asyncapi/asyncapi.json
