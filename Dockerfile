# One image for every FerrisQueue service; docker-compose.yml picks the service by command
# (python -m gateway | worker | projections, python -m streamlit run streamlit_app/app.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the services need (no .venv, var/ or tests from a developer's checkout).
COPY pyproject.toml README.md ./
COPY ferrisqueue ferrisqueue
COPY gateway gateway
COPY worker worker
COPY projections projections
COPY streamlit_app streamlit_app
COPY nats nats

# Editable, so the services run from /app: ferrisqueue.topology reads the stream and consumer
# definitions from nats/jetstream/ beside the package, which a plain wheel install lacks.
# The dependencies include psycopg, the driver of FQ_DATABASE_URL=postgresql+psycopg://...
RUN pip install -e .

# var/ holds local state (email outbox when no SMTP server is set); /srv/fq-storage is the
# mount point of the workers' shared storage volume (FQ_STORAGE_ROOT in docker-compose.yml).
RUN useradd --create-home --uid 10001 fq \
    && mkdir -p /app/var /srv/fq-storage \
    && chown fq /app/var /srv/fq-storage
USER fq

CMD ["python", "-m", "gateway"]
