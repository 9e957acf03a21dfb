"""Observability: /metrics read from the rows, request metrics and ids, JSON log lines with
request and draft ids, redaction, /healthz and /readyz, `manage.py healthcheck`."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from csbot.observability import logs, worker
from csbot.observability.context import log_bind, log_context, log_fields
from csbot.observability.metrics import scrape_collector
from drafting import observability as drafting_observability
from drafting.models import Draft, DraftAttempt, ModelEndpoint
from tests.factories import EndpointFactory, TeamSetup, TierFactory, ingest, make_team
from tests.http_stub import openai_stub


@pytest.fixture(autouse=True)
def _fresh_readings(settings: Any) -> Iterator[None]:
    """Every scrape and readiness check reads anew (both are cached per process)."""
    settings.METRICS_CACHE_SECONDS = 0
    settings.READYZ_ENDPOINT_CACHE_SECONDS = 0
    scrape_collector.invalidate()
    drafting_observability.endpoint_checks.clear()
    yield
    drafting_observability.endpoint_checks.clear()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused, at once)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def scrape(client: Client | None = None, **headers: Any) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed by Prometheus' own parser: {(sample name, sorted labels): value}."""
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- Metrics from the rows ---------------------------------------------------------------------


def _draft(setup: TeamSetup, n: int, *, status: str, endpoint: ModelEndpoint | None) -> Draft:
    draft = ingest(setup, f"c{n}", f"m{n}", f"Question number {n}").draft
    assert draft is not None
    now = timezone.now()
    Draft.objects.filter(pk=draft.pk).update(
        status=status,
        final_endpoint=endpoint,
        ready_at=now if status == Draft.Status.READY else None,
        text="An answer." if status == Draft.Status.READY else "",
    )
    return draft


def _attempt(draft: Draft, tier: int, endpoint: ModelEndpoint | None, **fields: Any) -> None:
    fields.setdefault("outcome", DraftAttempt.Outcome.OK)
    DraftAttempt.objects.create(draft=draft, tier=tier, endpoint=endpoint, **fields)


def test_metrics_report_drafts_escalations_cache_hits_and_spend_from_the_rows(db: None) -> None:
    local = EndpointFactory.create(name="local-vllm")
    paid = EndpointFactory.create(name="paid-api", kind=ModelEndpoint.Kind.PAID)
    setup = make_team("Metrics", endpoint=local)
    TierFactory.create(policy=setup.policy, position=2, endpoint=paid)
    # Three drafts answered by tier 1, 120 ms to 2 s each.
    for n, latency in enumerate((120, 800, 2000)):
        draft = _draft(setup, n, status=Draft.Status.READY, endpoint=local)
        _attempt(draft, 1, local, cost=Decimal("0.0000012"), latency_ms=latency, tokens_in=100)
    # One escalated: tier 1 answered but scored low, tier 2 wrote the draft.
    escalated = _draft(setup, 3, status=Draft.Status.READY, endpoint=paid)
    _attempt(escalated, 1, local, cost=Decimal("0.0000010"), latency_ms=300)
    _attempt(escalated, 2, paid, cost=Decimal("0.0024"), latency_ms=1500, tokens_out=40)
    # One served from the cache.
    cached = _draft(setup, 4, status=Draft.Status.READY, endpoint=None)
    _attempt(cached, 0, None, cache_hit=True, cache_match="exact")
    # One failed: tier 1 timed out, tier 2 skipped by its open circuit.
    failed = _draft(setup, 5, status=Draft.Status.FAILED, endpoint=None)
    _attempt(failed, 1, local, outcome="error", error_kind="timeout", latency_ms=30000)
    _attempt(failed, 2, paid, outcome="error", error_kind="circuit_open")
    # Waiting for a worker for ten minutes.
    queued = _draft(setup, 6, status=Draft.Status.QUEUED, endpoint=None)
    Draft.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(minutes=10))

    samples = scrape()

    drafts = "csbot_drafts"
    assert value(samples, drafts, status="ready", tier="1", endpoint="local-vllm") == 3
    assert value(samples, drafts, status="ready", tier="2", endpoint="paid-api") == 1
    assert value(samples, drafts, status="ready", tier="0", endpoint="cache") == 1
    assert value(samples, drafts, status="failed", tier="", endpoint="") == 1
    assert value(samples, drafts, status="queued", tier="", endpoint="") == 1
    assert ("csbot_drafts", (("endpoint", ""), ("status", "generating"), ("tier", ""))) in samples
    assert 590 < value(samples, "csbot_drafts_oldest_queued_seconds") < 900
    # Two steps past tier 1: the escalated draft and the failed draft's skipped tier 2.
    assert value(samples, "csbot_cascade_escalations_total", to_tier="2") == 2
    assert value(samples, "csbot_cache_hits_total", match="exact") == 1
    assert value(samples, "csbot_cache_hits_total", match="semantic") == 0
    assert (
        value(
            samples,
            "csbot_draft_attempts_total",
            tier="1",
            endpoint="local-vllm",
            outcome="ok",
            error_kind="",
            exploratory="false",
        )
        == 4
    )
    assert (
        value(samples, "csbot_provider_errors_total", endpoint="local-vllm", error_kind="timeout")
        == 1
    )
    assert (
        value(
            samples, "csbot_provider_errors_total", endpoint="paid-api", error_kind="circuit_open"
        )
        == 1
    )
    spent_local = value(
        samples, "csbot_spend_usd_total", endpoint="local-vllm", exploratory="false"
    )
    assert spent_local == pytest.approx(float(Decimal("0.0000012") * 3 + Decimal("0.0000010")))
    assert value(
        samples, "csbot_spend_usd_total", endpoint="paid-api", exploratory="false"
    ) == pytest.approx(0.0024)
    assert (
        value(samples, "csbot_provider_tokens_total", endpoint="local-vllm", direction="in") == 300
    )
    assert value(samples, "csbot_provider_tokens_total", endpoint="paid-api", direction="out") == 40
    # Latency histogram of real calls (the circuit-open skip is none): 120, 800, 2000, 300 ms
    # and the 30 s timeout on the local tier.
    hist = "csbot_provider_request_duration_seconds"
    assert value(samples, f"{hist}_count", endpoint="local-vllm", outcome="ok") == 4
    assert value(samples, f"{hist}_bucket", endpoint="local-vllm", outcome="ok", le="0.25") == 1
    assert value(samples, f"{hist}_bucket", endpoint="local-vllm", outcome="ok", le="1.0") == 3
    assert value(samples, f"{hist}_bucket", endpoint="local-vllm", outcome="ok", le="+Inf") == 4
    assert value(samples, f"{hist}_sum", endpoint="local-vllm", outcome="ok") == pytest.approx(3.22)
    assert value(samples, f"{hist}_count", endpoint="local-vllm", outcome="error") == 1
    assert value(samples, f"{hist}_count", endpoint="paid-api", outcome="error") == 0


def test_metrics_follow_new_rows_once_the_cache_expires(db: None, settings: Any) -> None:
    settings.METRICS_CACHE_SECONDS = 3600
    setup = make_team("Cache")
    _draft(setup, 1, status=Draft.Status.QUEUED, endpoint=None)
    first = scrape()
    _draft(setup, 2, status=Draft.Status.QUEUED, endpoint=None)
    assert value(scrape(), "csbot_drafts", status="queued", tier="", endpoint="") == value(
        first, "csbot_drafts", status="queued", tier="", endpoint=""
    )  # served from the per-process cache
    scrape_collector.invalidate()
    assert value(scrape(), "csbot_drafts", status="queued", tier="", endpoint="") == 2


def test_queue_depth_is_the_redis_list_length(db: None) -> None:
    from csbot.celery import app
    from drafting.tasks import draft_generate_task

    app.control.purge()
    for draft_id in (10**9, 10**9 + 1, 10**9 + 2):  # no worker runs: they wait in the queue
        draft_generate_task.apply_async(args=(draft_id,))
    try:
        samples = scrape()
    finally:
        app.control.purge()
    assert value(samples, "csbot_broker_up") == 1
    assert value(samples, "csbot_celery_queue_length", queue="celery") == 3


# --- Request metrics and access control --------------------------------------------------------


def test_each_request_is_counted_by_route_name_method_and_status(db: None) -> None:
    ok = {"view": "login", "method": "GET", "status": "200"}
    missing = {"view": "unmatched", "method": "GET", "status": "404"}
    before_ok = REGISTRY.get_sample_value("csbot_http_requests_total", ok) or 0
    before_missing = REGISTRY.get_sample_value("csbot_http_requests_total", missing) or 0
    before_seconds = (
        REGISTRY.get_sample_value(
            "csbot_http_request_duration_seconds_count", {"view": "login", "method": "GET"}
        )
        or 0
    )
    client = Client()
    assert client.get("/login/").status_code == 200
    assert client.get("/login/").status_code == 200
    assert client.get("/no/such/page/12345/").status_code == 404

    samples = scrape(client)
    assert value(samples, "csbot_http_requests_total", **ok) == before_ok + 2
    assert value(samples, "csbot_http_requests_total", **missing) == before_missing + 1
    assert (
        value(samples, "csbot_http_request_duration_seconds_count", view="login", method="GET")
        == before_seconds + 2
    )
    # Raw paths never become labels; probes and scrapes are not counted.
    assert not any("12345" in str(labels) for _, labels in samples)
    assert not any(dict(labels).get("view") == "/metrics" for _, labels in samples)


def test_metrics_are_refused_to_other_addresses_unless_they_bring_the_token(
    db: None, settings: Any
) -> None:
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer wrong-token"
        ).status_code
        == 403
    )
    granted = client.get(
        "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
    )
    assert granted.status_code == 200
    assert b"csbot_drafts" in granted.content
    # A forwarded header does not make a remote scraper local.
    assert (
        client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code
        == 403
    )
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_probes_answer_any_host_name_and_only_get(db: None) -> None:
    client = Client()
    # A load balancer probing by IP: not in ALLOWED_HOSTS, still answered.
    response = client.get("/healthz", HTTP_HOST="10.9.8.7:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.post("/healthz").status_code == 405
    # Anything else from that host is still refused by host validation.
    assert client.get("/login/", HTTP_HOST="10.9.8.7:8000").status_code == 400


# --- Log lines ---------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger's lines, formatted as in production (JSON, ids, redaction)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.CsbotJsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_request_gets_an_id_on_its_log_lines_and_response(db: None, json_log: Any) -> None:
    client = Client()
    response = client.get("/login/", HTTP_X_REQUEST_ID="lb-7f3a-42")
    assert response["X-Request-ID"] == "lb-7f3a-42"
    access = [line for line in lines(json_log) if line["logger"] == "csbot.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "lb-7f3a-42"
    assert line["level"] == "INFO"
    assert line["message"].startswith("GET /login/ 200")
    assert line["view"] == "login"
    assert line["status"] == 200
    assert line["timestamp"].startswith(str(timezone.now().year))

    # A header that could forge log lines is replaced by a fresh id.
    forged = client.get("/login/", HTTP_X_REQUEST_ID="x\nINFO forged line")
    generated = forged["X-Request-ID"]
    assert len(generated) == 32 and generated.isalnum()
    assert lines(json_log)[-1]["request_id"] == generated


def test_secrets_never_reach_a_log_line(json_log: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("ACME_API_KEY", "acme-live-7Hq2xZ9")
    redact = logs.Redactor()
    assert "7Hq2xZ9" not in redact("provider said: invalid key acme-live-7Hq2xZ9")

    logging.getLogger("tests.secrets").warning(
        "calling %s with Authorization: Bearer abcdefghijklmnop1234 and api_key=%s",
        "https://user:hunter2hunter2@api.example/v1",
        "sk-proj-0123456789abcdefghij",
        extra={"password": "not-in-the-output"},
    )
    line = json_log.getvalue()
    for secret in ("abcdefghijklmnop1234", "sk-proj-0123456789", "hunter2hunter2", "not-in-the"):
        assert secret not in line
    assert lines(json_log)[-1]["message"].count(logs.REDACTED) == 3
    # Ordinary words survive: token counts, the word "password" without a value.
    assert logs.redact("prompt_tokens=42 tokens_out=7 password reset") == (
        "prompt_tokens=42 tokens_out=7 password reset"
    )


def test_worker_log_lines_carry_task_draft_and_message_ids(
    celery_worker: None, settings: Any, json_log: Any
) -> None:
    """A real draft through the real broker and worker; its only tier refuses connections,
    so the worker logs the failure — with the ids of what it was drafting."""
    settings.DRAFT_MAX_TRIES = 1
    down = EndpointFactory.create(
        kind=ModelEndpoint.Kind.PAID, base_url=f"http://127.0.0.1:{closed_port()}/v1"
    )
    setup = make_team("Worker logs", endpoint=down)
    with log_context(request_id="ingest-req-42"):  # as the ingest view's request would
        result = ingest(setup, "c1", "m1", "Where is my parcel?")
    assert result.draft is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if Draft.objects.get(pk=result.draft.pk).status == Draft.Status.FAILED:
            break
        time.sleep(0.1)
    time.sleep(0.2)  # the task's own last lines
    drafting = [line for line in lines(json_log) if line.get("draft_id") == result.draft.pk]
    assert drafting, json_log.getvalue()[-2000:]
    failure = next(line for line in drafting if line["logger"] == "drafting.services")
    assert failure["level"] == "WARNING"
    assert failure["message_id"] == result.draft.message_id
    assert failure["task"] == "drafting.tasks.draft_generate"
    assert len(failure["task_id"]) == 36
    assert failure["request_id"] == "ingest-req-42"  # carried in the task's headers


def test_task_ids_are_set_for_a_task_and_cleared_after_it() -> None:
    task = SimpleNamespace(
        name="drafting.tasks.draft_generate", request=SimpleNamespace(request_id="req-9")
    )
    worker._task_started(task_id="t-1", task=task, args=(17,), kwargs={})
    assert dict(log_fields()) == {
        "task_id": "t-1",
        "task": "drafting.tasks.draft_generate",
        "draft_id": 17,
        "request_id": "req-9",
    }
    log_bind(message_id=4)  # what draft_generate adds once it has read the draft
    assert log_fields()["message_id"] == 4
    worker._task_finished()
    assert dict(log_fields()) == {}
    # Outside any task or request (a shell, a benchmark) nothing is bound: nothing would
    # ever clear it.
    log_bind(message_id=5)
    assert dict(log_fields()) == {}


def test_plain_lines_carry_the_ids_after_the_message() -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logs.PlainFormatter())
    handler.addFilter(logs.ContextFilter())
    record = logging.LogRecord("csbot.test", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    with log_context(request_id="r-1"):
        handler.handle(record)
    assert handler.stream.getvalue().rstrip().endswith("INFO csbot.test hello you request_id=r-1")


# --- Health ------------------------------------------------------------------------------------


def test_readyz_is_ready_with_the_database_redis_and_a_live_endpoint(db: None) -> None:
    with openai_stub() as stub:
        endpoint = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url)
        make_team("Ready", endpoint=endpoint)
        response = Client().get("/readyz")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["checks"]["database"]["status"] == "ok"
    assert report["checks"]["broker"] == {
        "status": "ok",
        "detail": "redis",
        "latency_ms": report["checks"]["broker"]["latency_ms"],
    }
    assert report["endpoints"][endpoint.name]["status"] == "ok"
    assert report["endpoints"][endpoint.name]["detail"] == "1 model(s)"
    assert report["policies"] == {"Ready / " + endpoint.tiers.get().policy.name: "reachable"}


def test_readyz_fails_when_the_broker_is_down(db: None, settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "fail"
    assert report["checks"]["broker"]["status"] == "fail"
    assert "Connection refused" in report["checks"]["broker"]["detail"]
    assert report["checks"]["database"]["status"] == "ok"


def test_a_down_endpoint_degrades_readiness_and_fails_it_when_required(
    db: None, settings: Any
) -> None:
    down = EndpointFactory.create(name="down-vllm", base_url=f"http://127.0.0.1:{closed_port()}/v1")
    setup = make_team("Down", endpoint=down)
    policy = f"Down / {setup.policy.name}"
    client = Client()

    response = client.get("/readyz")
    assert response.status_code == 200  # ingest keeps storing messages
    report = response.json()
    assert report["status"] == "degraded"
    assert report["endpoints"]["down-vllm"]["status"] == "fail"
    assert report["policies"] == {policy: "no tier reachable"}

    settings.READYZ_REQUIRE_ENDPOINTS = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "fail"

    # A second tier that answers makes the policy reachable again: ready, though degraded.
    with openai_stub() as stub:
        TierFactory.create(
            policy=setup.policy,
            position=2,
            endpoint=EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url),
        )
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["policies"] == {policy: "reachable"}


def test_endpoint_answers_are_reused_for_a_few_seconds(db: None, settings: Any) -> None:
    settings.READYZ_ENDPOINT_CACHE_SECONDS = 3600
    with openai_stub() as stub:
        endpoint = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url)
        make_team("Cached", endpoint=endpoint)
        assert Client().get("/readyz").json()["endpoints"][endpoint.name]["status"] == "ok"
    # The stub is gone; the answer from a moment ago still stands.
    assert Client().get("/readyz").json()["endpoints"][endpoint.name]["status"] == "ok"
    drafting_observability.endpoint_checks.clear()
    assert Client().get("/readyz").json()["endpoints"][endpoint.name]["status"] == "fail"


def test_healthcheck_command_exits_non_zero_when_not_ready(
    db: None, settings: Any, capsys: Any
) -> None:
    call_command("healthcheck")
    assert json.loads(capsys.readouterr().out)["status"] == "ok"
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with pytest.raises(CommandError) as failure:
        call_command("healthcheck")
    assert failure.value.returncode == 1
    assert json.loads(capsys.readouterr().out)["checks"]["broker"]["status"] == "fail"


@pytest.mark.slow
def test_gunicorn_workers_add_up_their_request_counts(
    transactional_db: None, tmp_path: Any
) -> None:
    """Several gunicorn workers, recycled every few requests: a scrape answered by any of
    them counts every request any of them served (PROMETHEUS_MULTIPROC_DIR)."""
    from django.db import connection

    db = connection.settings_dict
    port = closed_port()
    log_file = (tmp_path / "gunicorn.log").open("w")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "DJANGO_DEBUG": "0",
        # Metrics only: rate limits and token revocations need no cache shared by the workers.
        "CACHE_URL": "locmem://",
        "LOG_FORMAT": "json",
        "METRICS_CACHE_SECONDS": "0",
    }
    server = subprocess.Popen(  # noqa: S603 - our own gunicorn, fixed arguments
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "-c",
            "python:csbot.observability.gunicorn",
            "csbot.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=2",
            # Sync workers here: recycling is what is tested, and gthread workers (the config's
            # default, for the draft stream) reset connections when --max-requests recycles
            # them (gunicorn issue 3038), which is why csbot's deployment never sets it.
            "--worker-class=sync",
            "--threads=1",  # more than one would make gunicorn pick gthread anyway
            "--max-requests=4",  # workers are replaced as they go: their counts must stay
            "--preload",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "gunicorn down"
                time.sleep(0.3)
        for _ in range(12):
            request = urllib.request.Request(f"{base}/api/v1/messages", data=b"{}")  # noqa: S310
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)  # noqa: S310
            assert refused.value.code == 401
        labels = {"view": "api:message-ingest", "method": "POST", "status": "401"}
        for _ in range(3):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310
                page = response.read().decode()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(page)
                for s in family.samples
            }
            assert value(samples, "csbot_http_requests_total", **labels) == 12
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()
    # Served by at least three processes (4 requests each at most, the scrapes included).
    assert len(list((tmp_path / "prometheus").glob("counter_*.db"))) >= 3
    # The settings' logging, as deployed: one JSON access line per request, each with its id.
    records = [
        json.loads(line)
        for line in (tmp_path / "gunicorn.log").read_text().splitlines()
        if line.startswith("{")
    ]
    access = [r for r in records if r["logger"] == "csbot.access" and r["status"] == 401]
    assert len(access) == 12
    assert len({r["request_id"] for r in access}) == 12
    assert all(r["view"] == "api:message-ingest" for r in access)
