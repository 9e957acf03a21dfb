# syntax=docker/dockerfile:1
# One image for web, worker and beat (compose.yaml runs all three from it):
#   web     gunicorn -c python:csbot.observability.gunicorn csbot.wsgi:application
#               --bind 0.0.0.0:8000                             (the default command)
#   worker  celery -A csbot worker --loglevel INFO
#   beat    celery -A csbot beat --loglevel INFO   (schedules live in the database)
# The model server is not in it: tier 1 is the official vLLM image on the GPU (compose.yaml,
# service vllm), reached through LOCAL_LLM_URL. See docs/deployment.md.
#
# Python packages come only from requirements.lock (scripts/lock.sh), each file checked against
# its hash. torch there is the CPU build (2.13.0+cpu; the worker embeds on the CPU, the GPU is
# vLLM's), which the default package index does not carry: put its wheel in deploy/wheels/, or
# give the CPU wheel index from PyTorch's install instructions as
# `--build-arg PIP_EXTRA_INDEX_URL=…`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pip reads it from the environment; empty means the default index and deploy/wheels/ only.
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
COPY requirements.lock /tmp/requirements.lock
COPY deploy/wheels/ /tmp/wheels/
# --no-deps: the lock is the whole closure, nothing is resolved here. --only-binary: no
# compiler in the image, and no sdist's build script runs at install time.
RUN /venv/bin/pip install --require-hashes --no-deps --only-binary :all: \
        --find-links /tmp/wheels -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE} AS runtime
# WeasyPrint (the monthly report's PDF) lays out pages with Pango; DejaVu gives the PDFs and
# charts a font. Nothing else is installed: the packages' wheels carry their own libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
# The code is read from /app (PYTHONPATH), not installed into the venv: csbot.settings finds
# templates beside its package (BASE_DIR), so the package must be the one under /app.
# HF_HUB_OFFLINE: the MiniLM embedder ships inside a package; nothing is fetched from a hub.
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=csbot.settings \
    CSBOT_VAR_DIR=/app/var \
    CSBOT_MEDIA_DIR=/app/var/media \
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 csbot \
    && useradd --system --uid 10001 --gid csbot --create-home --home-dir /home/csbot csbot
WORKDIR /app
COPY --from=build /venv /venv
# Owned by root and read-only to the app user: a compromised process cannot rewrite the code.
COPY manage.py ./
COPY csbot ./csbot
COPY drafting ./drafting
COPY accounting ./accounting
COPY templates ./templates
COPY deploy/healthcheck.py ./deploy/healthcheck.py
# collectstatic imports the settings, which need a secret key: a throwaway one, at build time
# only (the memory broker keeps the settings from creating the filesystem broker's folders).
# The media folder is the only place the app writes (stored monthly reports): a volume.
RUN DJANGO_SECRET_KEY=build-only CELERY_BROKER_URL=memory:// \
        python manage.py collectstatic --noinput -v0 \
    && mkdir -p /app/var/media \
    && chown csbot:csbot /app/var/media
USER 10001:10001
EXPOSE 8000
# Liveness of the web process (GET /healthz, no dependency asked). compose.yaml gives the
# worker and beat containers their own checks (deploy/healthcheck.py worker|beat).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py", "web"]
# gunicorn reads its worker count from WEB_CONCURRENCY, other options from GUNICORN_CMD_ARGS;
# the config module makes its workers share request metrics (PROMETHEUS_MULTIPROC_DIR).
ENV WEB_CONCURRENCY=4
CMD ["gunicorn", "-c", "python:csbot.observability.gunicorn", "csbot.wsgi:application", \
     "--bind", "0.0.0.0:8000"]
