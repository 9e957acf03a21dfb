# One image for web, worker and beat. The local model server is not in it: in production
# tier 1 is the official vLLM server on a GPU (LOCAL_LLM_URL), see README.
# syntax=docker/dockerfile:1

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /venv
COPY pyproject.toml README.md ./
COPY csbot ./csbot
COPY drafting ./drafting
COPY accounting ./accounting
RUN /venv/bin/pip install .

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=csbot.settings CSBOT_VAR_DIR=/app/var
RUN useradd --create-home --uid 10001 csbot
WORKDIR /app
COPY --from=build /venv /venv
COPY manage.py ./
COPY csbot ./csbot
COPY drafting ./drafting
COPY accounting ./accounting
COPY templates ./templates
# collectstatic needs settings; a throwaway key is fine at build time only.
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
    && mkdir -p /app/var && chown -R csbot /app/var
USER csbot
EXPOSE 8000
# web (default); the worker runs `celery -A csbot worker`, beat `celery -A csbot beat`.
CMD ["gunicorn", "csbot.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4"]
