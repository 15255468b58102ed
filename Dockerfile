# syntax=docker/dockerfile:1
#
# Warden image: one image, every process. Default CMD is the HTTP edge;
# compose overrides it with `warden migrate` / `warden worker`.
#
# The image runs with WARDEN_ENV=production: it refuses to start until it is given
# secrets of its own (WARDEN_JWT_SECRET, at least 32 bytes, and the other production
# settings), never signing with the dev secret printed in the source. docker-compose.yml
# sets `dev` for a local stack.
#
#   docker build -t warden .
#   docker run --rm -p 8080:8080 --env-file warden.env warden          # edge
#   docker run --rm --env-file warden.env warden warden worker         # worker

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

# Same uv as the one that wrote uv.lock (lock format must be understood).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Install into /opt/venv (same path in the runtime stage, so the venv's
# interpreter symlinks and script shebangs stay valid); never let uv fetch a
# Python of its own: the base image's /usr/local/bin/python3.11 is the one.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

WORKDIR /src

# 1) dependencies only, from the lock: cached until pyproject.toml/uv.lock change.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --no-editable

# 2) the project itself, built as a wheel and installed non-editable, so the
#    runtime stage needs no source tree.
COPY domain ./domain
COPY contract ./contract
COPY storage ./storage
COPY handlers ./handlers
COPY web ./web
COPY warden ./warden
COPY migrations ./migrations
RUN uv sync --frozen --no-dev --no-editable

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 warden \
 && useradd --system --uid 10001 --gid warden --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin warden

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Alembic config + scripts for `warden migrate` (the migrations package is
# also inside the installed wheel; these keep `alembic -c alembic.ini` usable).
COPY --chown=root:root alembic.ini ./alembic.ini
COPY --chown=root:root migrations ./migrations

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WARDEN_ENV=production \
    WARDEN_HTTP_HOST=0.0.0.0 \
    WARDEN_HTTP_PORT=8080 \
    WARDEN_METRICS_PORT=9100

USER 10001:10001

# 8080: edge HTTP; 9100: worker Prometheus metrics.
EXPOSE 8080 9100

# No HEALTHCHECK here: the same image runs edge, worker and migrate, which
# need different probes; docker-compose.yml defines one per service.
STOPSIGNAL SIGTERM
CMD ["warden", "edge"]
