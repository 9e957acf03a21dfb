"""csbot settings: one module, driven by the environment (see README "Configuration").

Malformed values raise ImproperlyConfigured at start-up. Secrets have no production default.
"""

from __future__ import annotations

import re
from pathlib import Path

import dj_database_url
import django_stubs_ext
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from csbot.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    env_timezone,
    env_url,
)
from csbot.localenv import local_env_load
from csbot.observability.logs import logging_config

# Lets runtime code subscript Django generics (`admin.ModelAdmin[Team]`) as the type stubs do.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CSBOT_VAR_DIR", str(BASE_DIR / "var")))
# What `make run` ran with (database, DEBUG, a secret key kept in var/), for commands run
# beside it in a plain shell; only when the file exists, and only for variables the
# environment does not set (csbot.localenv; no image has the file).
try:
    local_env_load(VAR_DIR)
except ValueError as exc:
    raise ImproperlyConfigured(f"{exc} (written by `make run`: delete it to start over)") from exc

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-dev-only-key"  # noqa: S105 - only ever used with DEBUG on
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # The admin site admits admins only (staff plus superuser or the admin role).
    "csbot.admin_site.CsbotAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # PostgreSQL-only features: operator classes in index expressions (the HNSW vector indexes).
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular_sidecar",
    "drf_spectacular",
    "django_htmx",
    "csbot",
    "drafting",
    "accounting",
    "django_celery_beat",
    "auditlog",
    "csp",
]

MIDDLEWARE = [
    # First: probes and /metrics answer before host checks and the HTTPS redirect; then every
    # other request gets its id, metrics and access log line (csbot.observability).
    "csbot.observability.middleware.ProbeMiddleware",
    "csbot.observability.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Audit log entries name the logged-in user who made the change.
    "auditlog.middleware.AuditlogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "csbot.urls"
WSGI_APPLICATION = "csbot.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# PostgreSQL with pgvector everywhere: the default is the embedded server that `make run` and
# `make test` start (scripts/postgres.sh: PostgreSQL 18 from a Python wheel, data in var/);
# production points DATABASE_URL at its own server (compose.yaml: a pgvector image).
_database_url = env_url(
    "DATABASE_URL",
    "postgres://csbot:csbot@127.0.0.1:5433/csbot",
    schemes=("postgres", "postgresql", "pgsql"),
)
try:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from exc
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
# A database host that drops packets would otherwise hold a web process (and /readyz) for the
# operating system's TCP timeout, minutes.
_db_options["connect_timeout"] = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
# pgvector's iterative index scans: a similarity search filtered by team (and embedder) keeps
# walking the HNSW graph until it has its k rows, instead of returning fewer when the nearest
# vectors belong to other teams. relaxed_order may return them slightly out of order; callers
# re-sort their handful of rows (drafting.engine.vectors). Set per connection at start-up, so
# it costs no round trip; a placeholder until the extension loads, which then adopts it.
_db_options["options"] = " ".join(
    f"-c {name}={value}"
    for name, value in (
        (
            "hnsw.iterative_scan",
            env_choice(
                "DATABASE_HNSW_ITERATIVE_SCAN",
                "relaxed_order",
                choices=("off", "relaxed_order", "strict_order"),
            ),
        ),
        # 80 (pgvector's default is 40): with csbot's indexes (ef_construction 128) recall@10
        # ≥ 0.95 up to a million vectors, p50 about 6 ms there and 2 ms at 100 k
        # (bench/vectors.py, docs/performance.md).
        ("hnsw.ef_search", env_int("DATABASE_HNSW_EF_SEARCH", 80, minimum=1)),
    )
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:queue"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Generated files (monthly ENCS reports). Served only through permission-checked views.
MEDIA_ROOT = Path(env_str("CSBOT_MEDIA_DIR", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Celery ---------------------------------------------------------------------------------
# Default: Kombu's filesystem transport, an embedded broker shared by web and worker through a
# folder. Set CELERY_BROKER_URL=redis://… for anything real.
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", "filesystem://", schemes=("redis", "rediss", "filesystem", "memory")
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    # The transport expects its folder to exist; the embedded default must just work.
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        "store_processed": False,
        # Broadcast exchanges' tables; unset, Kombu writes `control/` into the current folder.
        "control_folder": str(VAR_DIR / "broker-control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# The draft row, not the broker message, is the truth: a lost message is re-enqueued by the
# sweeper, and a redelivered one finds the row already claimed.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The worker logs through LOGGING below (csbot.observability.worker), not Celery's own setup.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE
# Schedules live in the database (django-celery-beat), editable in the admin; the monthly ENCS
# report and the fact rollup are created there by accounting's migrations. Entries here are
# synced into it at beat start.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # Each team's S_use, S_edit, S_ignore and wait price, measured by accounting over the last
    # 30 days and handed to drafting, which withholds drafts worth less than nothing with them.
    "action-values": {"task": "accounting.tasks.action_values_refresh", "schedule": 3600.0},
    "sweep-stuck-drafts": {
        "task": "drafting.tasks.drafts_sweep",
        "schedule": float(env_int("DRAFT_SWEEP_INTERVAL_SECONDS", 30, minimum=1)),
    },
    # After an embedder change, stored vectors are embedded again a batch at a time (a count
    # query per run when there is nothing to do).
    "reembed-stale-vectors": {
        "task": "drafting.tasks.vectors_reembed",
        "schedule": float(env_int("REEMBED_INTERVAL_SECONDS", 300, minimum=1)),
    },
    # Knowledge chunks and macros still without the current embedder's vector (a lost doorbell,
    # an embedder that was down or changed): found by text search only until then.
    "index-stale-knowledge": {
        "task": "drafting.tasks.knowledge_index_stale",
        "schedule": float(env_int("REEMBED_INTERVAL_SECONDS", 300, minimum=1)),
    },
    # The cascade router (drafting.learning.routing): retrained from the day's explored drafts
    # and actions; a version goes into force only when it beats the plain cascade held out.
    "retrain-routers": {
        "task": "drafting.tasks.routers_retrain",
        "schedule": float(env_int("ROUTER_RETRAIN_INTERVAL_SECONDS", 24 * 3600, minimum=60)),
    },
    # The local model's adapter (drafting.distillation): policies with distill_nightly on (off
    # by default) train a new one once enough sent replies are new since their last run.
    "retrain-adapters": {
        "task": "drafting.tasks.adapters_retrain",
        "schedule": float(env_int("DISTILL_RETRAIN_INTERVAL_SECONDS", 24 * 3600, minimum=60)),
    },
}

# --- Drafting ---------------------------------------------------------------------------------
# Base URL of an OpenAI-compatible vLLM server (e.g. a GPU box). Empty: `manage.py local_llm`
# starts the CPU build locally on LOCAL_LLM_PORT.
LOCAL_LLM_URL = env_url("LOCAL_LLM_URL", "", schemes=("http", "https"))
LOCAL_LLM_PORT = env_int("LOCAL_LLM_PORT", 8001, minimum=1)
# Whether the local server started here serves LoRA adapters beside the model (published
# adapters, shadow answers). On a CPU that costs the base about a fifth of its decoding speed
# (docs/distillation.md): a machine that serves its promoted adapter merged and shadows nothing
# turns it off. An adapter published meanwhile is loaded once the server restarts with it on.
LOCAL_LLM_LORA = env_bool("LOCAL_LLM_LORA", True)
# A queued draft not picked up for this long is re-enqueued; a generating draft whose worker
# went silent for this long is reclaimed.
DRAFT_STALE_SECONDS = env_int("DRAFT_STALE_SECONDS", 120, minimum=1)
# Drafts older than this are worthless to the agent: the sweeper marks them failed.
DRAFT_MAX_AGE_SECONDS = env_int("DRAFT_MAX_AGE_SECONDS", 1800, minimum=1)
# The whole cascade of one draft must finish within this many seconds: no tier is asked
# after it, and each tier's timeout is cut to the time left.
DRAFT_DEADLINE_SECONDS = env_int("DRAFT_DEADLINE_SECONDS", 90, minimum=1)
# Circuit breaker per endpoint, shared by all workers through Redis: this many rate limits /
# timeouts / outages in a row (or one auth error) cool the endpoint down for this long.
BREAKER_FAILURES = env_int("BREAKER_FAILURES", 3, minimum=1)
BREAKER_COOLDOWN_SECONDS = env_int("BREAKER_COOLDOWN_SECONDS", 30, minimum=1)
# Completion cache: agent-approved replies to first-turn messages are reused for this long
# (0 turns the cache off). "Lightly edited" = normalised edit distance up to this share.
DRAFT_CACHE_TTL_SECONDS = env_int("DRAFT_CACHE_TTL_SECONDS", 7 * 24 * 3600, minimum=0)
DRAFT_CACHE_MAX_EDIT_PERCENT = env_int("DRAFT_CACHE_MAX_EDIT_PERCENT", 20, minimum=0)
# Semantic half of the cache: a first-turn message whose embedding has cosine similarity of at
# least this with a cached question gets that question's reply. Strict on purpose: "ship to
# Canada?" and "ship to Mexico?" are close in embedding space but need different answers.
# Above 1 turns the semantic cache off (exact hits only).
DRAFT_CACHE_SEMANTIC_THRESHOLD = env_float(
    "DRAFT_CACHE_SEMANTIC_THRESHOLD", 0.95, minimum=0.5, maximum=1.01
)
# Few-shot prompting: the k replies agents used as is for the most similar earlier customer
# messages (cosine ≥ the minimum) go into the system prompt. 0 turns it off.
DRAFT_FEWSHOT_K = env_int("DRAFT_FEWSHOT_K", 3, minimum=0)
DRAFT_FEWSHOT_MIN_SIMILARITY = env_float(
    "DRAFT_FEWSHOT_MIN_SIMILARITY", 0.5, minimum=0.0, maximum=1.0
)
# Knowledge grounding (issue 16). Articles are chunked along headings and paragraphs to about
# KNOWLEDGE_CHUNK_TOKENS estimated tokens; retrieval takes KNOWLEDGE_CANDIDATES from each of the
# vector and text searches, fuses them, and puts at most KNOWLEDGE_PASSAGES into the prompt.
KNOWLEDGE_CHUNK_TOKENS = env_int("KNOWLEDGE_CHUNK_TOKENS", 300, minimum=16)
KNOWLEDGE_CANDIDATES = env_int("KNOWLEDGE_CANDIDATES", 40, minimum=1)
KNOWLEDGE_PASSAGES = env_int("KNOWLEDGE_PASSAGES", 5, minimum=0)
# A passage is relevant to the turn at this cosine or more (drafting.engine.grounding): with
# MiniLM, passages that answer a question score 0.48-0.6 against it, passages on other topics
# 0.07-0.22. Below it for every passage, the policy's no-knowledge rule applies.
KNOWLEDGE_MIN_SIMILARITY = env_float("KNOWLEDGE_MIN_SIMILARITY", 0.35, minimum=0.0, maximum=1.0)
# Macros as tier 0 (drafting.engine.macros): offered by similarity at this cosine or more
# (strict: "Do you ship to Mexico?" is 0.71 from "...Canada?", paraphrases 0.80-0.89; above 1
# turns matching by similarity off), or by an intent verdict at this confidence or more.
MACRO_MIN_SIMILARITY = env_float("MACRO_MIN_SIMILARITY", 0.8, minimum=0.5, maximum=1.01)
MACRO_MIN_INTENT_CONFIDENCE = env_float(
    "MACRO_MIN_INTENT_CONFIDENCE", 0.9, minimum=0.0, maximum=1.0
)
# Uploads (admin, API): one file, and a ZIP's unpacked total, at most this many bytes.
KNOWLEDGE_IMPORT_MAX_BYTES = env_int("KNOWLEDGE_IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
# Text embeddings (semantic cache, few-shot search; issue 5's classifiers too):
# "minilm" = the all-MiniLM-L6-v2 sentence-transformer in the worker process (shipped as a
# package, no download), "vllm" = the local vLLM embedding server (`manage.py local_llm serve
# --embed`: SmolLM2-135M as a pooling model on LOCAL_EMBED_PORT), or the vLLM server at
# EMBEDDING_URL serving EMBEDDING_MODEL (a larger model on a GPU), "openai" = any
# OpenAI-compatible /v1/embeddings endpoint (EMBEDDING_URL and EMBEDDING_MODEL required),
# "none" = exact cache only, no few-shot examples.
EMBEDDING_BACKEND = env_choice(
    "EMBEDDING_BACKEND", "minilm", choices=("minilm", "vllm", "openai", "none")
)
LOCAL_EMBED_PORT = env_int("LOCAL_EMBED_PORT", 8011, minimum=1)
EMBEDDING_URL = env_url("EMBEDDING_URL", "", schemes=("http", "https"))
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", "")
EMBEDDING_API_KEY_ENV = env_str("EMBEDDING_API_KEY_ENV", "")
# CPU threads the in-process embedder uses (per process).
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 1, minimum=1)
# Vectors kept in memory per process, keyed by the text's hash.
EMBEDDING_CACHE_SIZE = env_int("EMBEDDING_CACHE_SIZE", 10_000, minimum=0)
# Learned cascade scorer (drafting.learning.scorer): an agent's edit of at most this share of the
# draft still labels it good; a policy's scorer is trained once it has this many labelled
# drafts with at least SCORER_MIN_MINORITY of the rarer class, from its newest
# SCORER_MAX_LABELS, and goes into force only with an out-of-fold AUC of SCORER_MIN_AUC.
SCORER_GOOD_EDIT_PERCENT = env_int("SCORER_GOOD_EDIT_PERCENT", 20, minimum=0)
SCORER_MIN_LABELS = env_int("SCORER_MIN_LABELS", 40, minimum=4)
SCORER_MIN_MINORITY = env_int("SCORER_MIN_MINORITY", 10, minimum=2)
SCORER_MAX_LABELS = env_int("SCORER_MAX_LABELS", 5000, minimum=4)
SCORER_MIN_AUC = env_float("SCORER_MIN_AUC", 0.6, minimum=0.0, maximum=1.0)
# Distillation (issue 19): LoRA adapters trained by `manage.py distill_train` (and the nightly
# retrain) are written under this folder, one sub-folder per run; the vLLM server reads them
# from there, so on a multi-machine setup it is a shared volume.
DISTILL_ADAPTER_DIR = Path(env_str("DISTILL_ADAPTER_DIR", str(VAR_DIR / "adapters")))
# The first port of the vLLM servers that serve adapters merged into the base's weights
# (drafting.adapters.adapter_serve_merged: one per adapter, the next free port upward).
DISTILL_MERGED_PORT = env_int("DISTILL_MERGED_PORT", 8041, minimum=1)
# Transient provider failures are retried (by the sweeper) at most this many times.
DRAFT_MAX_TRIES = env_int("DRAFT_MAX_TRIES", 5, minimum=1)
DRAFT_RETRY_BASE_SECONDS = env_int("DRAFT_RETRY_BASE_SECONDS", 10, minimum=0)
# How many earlier messages of the thread go into the prompt.
DRAFT_HISTORY_MESSAGES = env_int("DRAFT_HISTORY_MESSAGES", 12, minimum=1)

# --- Agent console ----------------------------------------------------------------------------
# Opening a conversation claims it for this long (renewed while the agent keeps it open), so a
# second agent sees it as taken instead of answering the same message.
CONSOLE_CLAIM_SECONDS = env_int("CONSOLE_CLAIM_SECONDS", 300, minimum=10)
# Conversations per page of the queue.
CONSOLE_QUEUE_PAGE_SIZE = env_int("CONSOLE_QUEUE_PAGE_SIZE", 50, minimum=5)

# --- E-mail (monthly ENCS reports to managers) ------------------------------------------------
# "smtp" sends through EMAIL_HOST; "console" prints messages to the log (the default, so a
# fresh install never mails anyone by accident).
EMAIL_BACKEND = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
}[env_choice("EMAIL_DELIVERY", "console", choices=("smtp", "console"))]
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "csbot <csbot@localhost>")

# --- Ingestion API ----------------------------------------------------------------------------
# Documented limit on a message's text (characters); longer text is a 400 with a field error.
CSBOT_MAX_MESSAGE_CHARS = env_int("CSBOT_MAX_MESSAGE_CHARS", 4000, minimum=1)
# Request bodies above this are refused before parsing (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("CSBOT_MAX_BODY_BYTES", 64 * 1024, minimum=1024)

# Times sent by clients (a message's sent_at, an action's shown_at/acted_at) may run ahead of
# this server's clock by at most this many seconds; later ones are refused (400).
CSBOT_CLOCK_SKEW_SECONDS = env_int("CSBOT_CLOCK_SKEW_SECONDS", 300, minimum=0)
# An agent action whose handle time (shown → acted) exceeds this is stored but left out of ENCS
# and counted as an outlier: a reply days after the draft was shown measures a break, not work.
ACTION_MAX_HANDLE_SECONDS = env_int("ACTION_MAX_HANDLE_SECONDS", 3600, minimum=1)

# Seconds a web process keeps a valid API token without asking the database again; a
# revocation reaches every process sharing CACHE_URL at once (csbot.api.auth). 0 turns the
# cache off.
API_TOKEN_CACHE_SECONDS = env_int("API_TOKEN_CACHE_SECONDS", 30, minimum=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "csbot.api.auth.IntegrationTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["csbot.api.auth.HasTeam"],
    "DEFAULT_PARSER_CLASSES": ["csbot.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "csbot.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "csbot API",
    "DESCRIPTION": (
        "Ingest customer messages, read conversations and reply drafts, and post agent actions. "
        "Authenticate with `Authorization: Token <key>` (one token per channel/integration)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from our own static files: no CDN needed (and none reachable offline).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Conversations and drafts both have a `status`: name their enums (else a hashed name and
    # a warning that fails `check --deploy --fail-level WARNING`).
    "ENUM_NAME_OVERRIDES": {
        "ConversationStatusEnum": "csbot.models.Conversation.Status",
        "DraftStatusEnum": "drafting.models.Draft.Status",
    },
}

# --- Security: cache for rate limits, HTTPS, browser policies, audit trail ------------------
# Rate-limit counters and the API token revocation generation live in the cache, so every
# process must share it: production sets CACHE_URL=redis://host:6379/2 (Django's built-in
# Redis cache). Empty (DJANGO_DEBUG on only: csbot.wsgi refuses to serve otherwise) or
# `locmem://` (a per-process cache on purpose: tests, one process): a per-process memory
# cache, which `check --deploy` warns about (csbot.W001).
CACHE_URL = env_url("CACHE_URL", "", schemes=("redis", "rediss", "locmem"))
CACHES: dict[str, dict[str, object]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "csbot",
        }
        if CACHE_URL.startswith("redis")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}


def _env_rate(name: str, default: str) -> str:
    """A rate limit as django-ratelimit reads it: a count per second, minute, hour or day,
    optionally per several of them ("10/m", "300/5m")."""
    value = env_str(name, default).strip()
    if not re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate such as 10/m or 500/s.")
    return value


# Ingest (POST /api/v1/messages) per channel token: generous, a guard against a runaway
# integration rather than a quota (the load bench posts 250 messages/s from one token).
CSBOT_INGEST_RATE = _env_rate("CSBOT_INGEST_RATE", "30000/m")
# Login form posts, per username and per client address (an office behind one NAT address
# shares the second): slows down password guessing.
CSBOT_LOGIN_RATE = _env_rate("CSBOT_LOGIN_RATE", "10/m")
CSBOT_LOGIN_IP_RATE = _env_rate("CSBOT_LOGIN_IP_RATE", "30/m")
# Behind a proxy REMOTE_ADDR is the proxy: name the request.META key holding the client's
# address (e.g. HTTP_X_REAL_IP or HTTP_X_FORWARDED_FOR) so the per-address login limit is per
# client (csbot.security.client_ip reads it).
# A header name (X-Real-IP) or its request.META key (HTTP_X_REAL_IP) alike.
CSBOT_CLIENT_IP_HEADER = env_str("CSBOT_CLIENT_IP_HEADER", "").strip().upper().replace("-", "_")
if CSBOT_CLIENT_IP_HEADER and not CSBOT_CLIENT_IP_HEADER.startswith("HTTP_"):
    CSBOT_CLIENT_IP_HEADER = "HTTP_" + CSBOT_CLIENT_IP_HEADER
RATELIMIT_IP_META_KEY = "csbot.security.client_ip"

# CSBOT_HTTPS=1 says users reach csbot over HTTPS; production must set it. Cookies then go
# over HTTPS only, browsers are told (HSTS) never to use plain HTTP, and plain-HTTP requests
# are redirected. Off by default so `make run`, the tests and the load bench work over plain
# http://127.0.0.1.
CSBOT_HTTPS = env_bool("CSBOT_HTTPS", False)
SESSION_COOKIE_SECURE = CSBOT_HTTPS
CSRF_COOKIE_SECURE = CSBOT_HTTPS
SECURE_SSL_REDIRECT = env_bool("CSBOT_SSL_REDIRECT", CSBOT_HTTPS)
# Probes and Prometheus inside the network speak plain HTTP to the container: not redirected.
SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics"]
# TLS ends at a proxy: the header the proxy sets to "https" (e.g. X-Forwarded-Proto). Only
# for a proxy that overwrites the header, else a client could claim HTTPS.
_PROXY_SSL_HEADER = env_str("CSBOT_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SECURE_HSTS_SECONDS = env_int(
    "CSBOT_HSTS_SECONDS", 365 * 24 * 3600 if CSBOT_HTTPS else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CSBOT_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a commitment made for the whole domain (browsers ship the list): opt in.
SECURE_HSTS_PRELOAD = env_bool("CSBOT_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts from our own static files only (no inline script, no eval): the console's scripts
# are static files and the API docs use drf-spectacular's split Swagger view. Inline *style*
# stays allowed: the admin, the draft panel's word shading and the charts' SVG use style
# attributes, and htmx adds its indicator style.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Messages shown after a redirect stay on the server (the session), not in a cookie that is
# signed but readable: what they say is nobody else's business.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# Error pages (DEBUG) and error e-mails hide the Authorization header and service URLs too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "csbot.security.SecretsReporterFilter"

# Audit trail of configuration: who changed a price, a threshold, a cap, a labour rate, a token
# or a role, with old and new values (django-auditlog; read-only in the admin). Conversations
# and drafts are not configuration and are not logged here.
AUDITLOG_INCLUDE_TRACKING_MODELS = (
    "drafting.ModelEndpoint",
    "drafting.EndpointPrice",
    "drafting.CascadePolicy",
    "drafting.CascadeTier",
    "drafting.IntentRule",
    "drafting.Experiment",
    "drafting.ExperimentArm",
    # Promotion and rollback of an adapter; the curves are data, not configuration.
    {"model": "drafting.DistillRun", "exclude_fields": ["loss_curve", "validation"]},
    "accounting.AccountingSettings",
    "accounting.FixedCost",
    # The key's hash is no secret, but nothing about a key belongs in a log.
    {"model": "csbot.ApiToken", "exclude_fields": ["key_hash"]},
    "csbot.AgentProfile",
)

# --- Observability (csbot.observability; README "Operations") ---------------------------------
# One line per log record on stderr: "json" (one object per line, with request_id on the web
# and task_id/draft_id/message_id in the worker) by default, "plain" for a terminal (the
# default with DEBUG on, as under `make run`). Secrets are redacted from both.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain" if DEBUG else "json", choices=("json", "plain"))
# One access log line per request (method, path, status, duration; probes excluded).
LOG_REQUESTS = env_bool("LOG_REQUESTS", True)
LOGGING = logging_config(
    log_format=LOG_FORMAT,
    level=env_choice(
        "LOG_LEVEL", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    ),
)
# /metrics answers peers in these networks (REMOTE_ADDR), or anyone presenting METRICS_TOKEN
# as `Authorization: Bearer …`. Default: this machine only.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Draft, spend and queue metrics are read from the database at most this often per process.
METRICS_CACHE_SECONDS = env_int("METRICS_CACHE_SECONDS", 5, minimum=0)
# /readyz: how long each model endpoint may take to list its models, how long its answer is
# reused, and whether an active policy with no reachable tier makes the process unready
# (off: ingest keeps storing messages and their drafts wait for the endpoint).
READYZ_ENDPOINT_TIMEOUT_SECONDS = env_float(
    "READYZ_ENDPOINT_TIMEOUT_SECONDS", 2.0, minimum=0.1, maximum=60.0
)
READYZ_ENDPOINT_CACHE_SECONDS = env_int("READYZ_ENDPOINT_CACHE_SECONDS", 15, minimum=0)
READYZ_REQUIRE_ENDPOINTS = env_bool("READYZ_REQUIRE_ENDPOINTS", False)
