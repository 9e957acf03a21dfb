"""A trained adapter after training (drafting.adapters): published as an endpoint priced like
its base and loaded into the server, answering in shadow (never shown, its cost spent, never a
label), promoted into the policy's tier and rolled back under the audit log, put live in an
experiment. The server is a recorded HTTP stub; the real vLLM path is test_distill_loop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounting.dashboard import tier_costs
from accounting.facts import Scope
from csbot.console.composer import TOOL_CHOICES
from csbot.locks import advisory_lock
from drafting import adapters, localserver
from drafting import services as drafting
from drafting.adapters import AdapterStageError
from drafting.learning.offpolicy import policy_log
from drafting.learning.routing import router_rows
from drafting.learning.scorer import scorer_labels
from drafting.learning.tuning import exploration_table
from drafting.models import (
    CascadePolicy,
    CascadeTier,
    DistillRun,
    Draft,
    DraftAttempt,
    EndpointPrice,
    ExperimentArm,
    ModelEndpoint,
)
from drafting.selectors import enabled_tiers
from tests.factories import (
    EARLY,
    AgentActionFactory,
    EndpointFactory,
    TeamSetup,
    TierFactory,
    UserFactory,
    ingest,
    make_team,
)
from tests.http_stub import Reply, StubServer, chat_completion, openai_stub

BASE_TEXT = "Your refund was issued today; it reaches your card in 3 to 5 days."
ADAPTER_TEXT = "Refund sent today, expect it within five working days. Anything else?"


def _answer(payload: dict[str, Any]) -> Reply:
    """The base model and the adapter answer differently, each under its own model name (as
    vLLM names the model that answered)."""
    model = payload.get("model", "")
    text = ADAPTER_TEXT if model.startswith("csbot-") else BASE_TEXT
    return Reply(body=chat_completion(text, model=model, prompt_tokens=80, completion_tokens=20))


@pytest.fixture
def server() -> Iterator[StubServer]:
    with openai_stub(_answer) as stub:
        yield stub


@pytest.fixture
def team(db: None, server: StubServer) -> TeamSetup:
    """A team whose one tier is a local endpoint at the stub, priced by GPU time."""
    local = EndpointFactory.create(
        name="local smollm", base_url=server.base_url, price__gpu_hour_usd=Decimal("1.20")
    )
    return make_team("Acme", endpoint=local)


def trained(setup: TeamSetup, *, version: int = 1, **fields: Any) -> DistillRun:
    values: dict[str, Any] = {
        "team": setup.team,
        "policy": setup.policy,
        "version": version,
        "base_endpoint": setup.endpoint,
        "base_model": "SmolLM2-135M-Instruct",
        "adapter_name": f"csbot-{setup.team.pk}-v{version}",
        "adapter_path": f"/srv/adapters/acme-v{version}",
        "status": DistillRun.Status.SUCCEEDED,
    }
    values.update(fields)
    return DistillRun.objects.create(**values)


def loads(server: StubServer) -> list[dict[str, Any]]:
    return [r["json"] for r in server.requests if r["path"].endswith("/load_lora_adapter")]


def ready_draft(setup: TeamSetup, conversation: str, *, shadow: bool) -> Draft:
    """A customer message drafted through the cascade; `shadow`: drawn into the shadow sample.
    The shadow bell is caught here (the test rings draft_shadow itself)."""
    draft = ingest(setup, conversation, f"{conversation}-m1", "Where is my refund?").draft
    assert draft is not None
    drafting.draft_generate(
        draft_id=draft.pk, shadow_draw=lambda: 0.0 if shadow else 0.999, explore_draw=lambda: 1.0
    )
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY
    return draft


# --- Publish ------------------------------------------------------------------------------------


def test_publishing_makes_an_endpoint_priced_like_its_base_and_loads_the_adapter(
    team: TeamSetup, server: StubServer
) -> None:
    run = trained(team)

    endpoint = adapters.adapter_publish(run=run)

    assert endpoint.kind == ModelEndpoint.Kind.LOCAL
    assert endpoint.model_name == run.adapter_name
    assert endpoint.base_url == server.base_url
    assert endpoint.max_output_tokens == team.endpoint.max_output_tokens
    assert endpoint.timeout_seconds == team.endpoint.timeout_seconds
    [price] = EndpointPrice.objects.filter(endpoint=endpoint)
    assert price.gpu_hour_usd == Decimal("1.20") and price.effective_from == EARLY
    assert "priced like its base" in price.note
    run.refresh_from_db()
    assert run.endpoint == endpoint
    assert loads(server) == [{"lora_name": run.adapter_name, "lora_path": run.adapter_path}]

    again = adapters.adapter_publish(run=run)  # idempotent: the same endpoint and price

    assert again == endpoint
    assert ModelEndpoint.objects.filter(model_name=run.adapter_name).count() == 1
    assert EndpointPrice.objects.filter(endpoint=endpoint).count() == 1


def test_a_server_that_is_down_does_not_stop_publishing(db: None) -> None:
    setup = make_team(
        "Down", endpoint=EndpointFactory.create(base_url="http://127.0.0.1:9/v1", name="down")
    )
    run = trained(setup)

    endpoint = adapters.adapter_publish(run=run)

    assert endpoint.model_name == run.adapter_name


def test_only_a_trained_adapter_is_published(team: TeamSetup) -> None:
    run = trained(team, status=DistillRun.Status.FAILED)
    with pytest.raises(AdapterStageError, match="not trained"):
        adapters.adapter_publish(run=run)
    assert not ModelEndpoint.objects.filter(model_name=run.adapter_name).exists()


def test_the_server_is_started_with_the_published_adapters_not_the_retired(
    team: TeamSetup, tmp_path: Any, settings: Any
) -> None:
    folders = {}
    for version in (1, 2, 3):
        folders[version] = tmp_path / f"v{version}"
        folders[version].mkdir()
    serving = trained(team, version=1, adapter_path=str(folders[1]))
    retired = trained(team, version=2, adapter_path=str(folders[2]))
    trained(team, version=3, adapter_path=str(folders[3]))  # not published
    gone = trained(team, version=4, adapter_path=str(tmp_path / "deleted"))
    for run in (serving, retired, gone):
        adapters.adapter_publish(run=run)
    DistillRun.objects.filter(pk=retired.pk).update(stage=DistillRun.Stage.RETIRED)

    assert adapters.adapters_serving() == {serving.adapter_name: str(folders[1])}
    assert adapters.adapters_serving(base_url=team.endpoint.base_url + "/") == {
        serving.adapter_name: str(folders[1])
    }
    assert adapters.adapters_serving(base_url="http://elsewhere:8000/v1") == {}


def test_local_llm_starts_the_server_with_the_published_adapters(
    db: None, tmp_path: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOCAL_LLM_URL = ""
    setup = make_team("Served", endpoint=EndpointFactory.create(name="local", base_url=""))
    (tmp_path / "v1").mkdir()
    run = trained(setup, adapter_path=str(tmp_path / "v1"))
    monkeypatch.setattr(localserver, "load_adapter", lambda *a, **k: True)
    adapters.adapter_publish(run=run)
    started: list[dict[str, Any]] = []

    def ensure_server(**kwargs: Any) -> str:
        started.append(kwargs)
        return "http://127.0.0.1:8001/v1"

    monkeypatch.setattr(localserver, "ensure_server", ensure_server)

    call_command("local_llm", "serve", "--background", stdout=StringIO())
    call_command("local_llm", "serve", "--background", "--embed", stdout=StringIO())

    assert started[0]["lora_modules"] == {run.adapter_name: str(tmp_path / "v1")}
    assert started[0]["lora"] is True
    assert started[1]["lora_modules"] is None  # the embedding server serves no adapter

    # LOCAL_LLM_LORA off (a CPU machine serving its adapter merged): the base runs alone.
    settings.LOCAL_LLM_LORA = False
    call_command("local_llm", "serve", "--background", stdout=StringIO())
    assert started[2]["lora"] is False and started[2]["lora_modules"] is None


# --- Serving merged ------------------------------------------------------------------------------


@pytest.fixture
def merging(settings: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The merge and the servers recorded, not run (the real ones: test_distill.py merges,
    test_distill_loop.py serves a merged copy through vLLM)."""
    from drafting.learning import distill

    settings.LOCAL_LLM_URL = ""
    settings.DISTILL_MERGED_PORT = 8041
    calls: dict[str, list[Any]] = {"merged": [], "started": [], "stopped": [], "loaded": []}

    def merge_adapter(*, base_dir: Any, adapter_dir: Any, out_dir: Any) -> Any:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        calls["merged"].append((base_dir.name, adapter_dir, out_dir))
        return out_dir

    def ensure_server(*, port: int, **kwargs: Any) -> str:
        calls["started"].append((port, kwargs.get("served_model_name"), kwargs.get("model")))
        return f"http://127.0.0.1:{port}/v1"

    monkeypatch.setattr(distill, "merge_adapter", merge_adapter)
    monkeypatch.setattr(localserver, "ensure_server", ensure_server)
    monkeypatch.setattr(localserver, "stop_server", lambda port: calls["stopped"].append(port))
    monkeypatch.setattr(
        localserver, "load_adapter", lambda url, **k: calls["loaded"].append((url, k["name"]))
    )
    return calls


def test_a_merged_copy_serves_the_adapters_endpoint_from_a_server_of_its_own(
    team: TeamSetup, tmp_path: Any, merging: dict[str, list[Any]]
) -> None:
    boss = UserFactory.create(is_staff=True)
    one = trained(team, adapter_path=str(tmp_path / "v1"))
    two = trained(team, version=2, adapter_path=str(tmp_path / "v2"))
    adapters.adapter_promote(run=one, user=boss)

    endpoint = adapters.adapter_serve_merged(run=one, user=boss)

    one.refresh_from_db()
    assert one.serving == DistillRun.Serving.MERGED
    assert one.merged_path == str(tmp_path / "v1-merged")
    assert merging["merged"] == [("SmolLM2-135M-Instruct", tmp_path / "v1", tmp_path / "v1-merged")]
    assert merging["started"] == [(8041, one.adapter_name, tmp_path / "v1-merged")]
    # The same endpoint row, now at the merged server: the promoted tier follows it.
    assert endpoint.pk == one.endpoint_id and endpoint.base_url == "http://127.0.0.1:8041/v1"
    assert CascadeTier.objects.get(policy=team.policy).endpoint.base_url == endpoint.base_url
    run_log = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(DistillRun), object_pk=str(one.pk)
    ).latest("timestamp")
    assert run_log.actor == boss and run_log.changes_dict["serving"] == ["lora", "merged"]
    # No LoRA module for it on the base's server any more; a server of its own instead.
    assert one.adapter_name not in adapters.adapters_serving(base_url=team.endpoint.base_url)
    assert adapters.merged_serving() == [
        localserver.MergedModel(port=8041, name=one.adapter_name, folder=tmp_path / "v1-merged")
    ]

    adapters.adapter_serve_merged(run=one, user=boss)  # again: no second merge, same port
    assert len(merging["merged"]) == 1 and merging["started"][-1][0] == 8041
    adapters.adapter_serve_merged(run=two, user=boss)  # the next adapter, the next port
    assert merging["started"][-1][:2] == (8042, two.adapter_name)

    endpoint = adapters.adapter_serve_lora(run=one, user=boss)

    one.refresh_from_db()
    assert one.serving == DistillRun.Serving.LORA and endpoint.base_url == team.endpoint.base_url
    assert merging["stopped"] == [8041]
    assert merging["loaded"][-1] == (team.endpoint.base_url, one.adapter_name)
    assert [m.port for m in adapters.merged_serving()] == [8042]
    with pytest.raises(AdapterStageError, match="not served merged"):
        adapters.adapter_serve_lora(run=one, user=boss)


def test_distill_serve_switches_an_adapter_to_merged_and_back(
    team: TeamSetup, tmp_path: Any, merging: dict[str, list[Any]]
) -> None:
    run = trained(team, adapter_path=str(tmp_path / "v1"))
    args = ["distill_serve", "--team", team.team.name, "--adapter-version", "1"]
    out, err = StringIO(), StringIO()

    call_command(*args, "--merged", stdout=out, stderr=err)

    run.refresh_from_db()
    assert run.serving == DistillRun.Serving.MERGED
    assert out.getvalue().strip() == "http://127.0.0.1:8041/v1"
    assert "merging adapter v1" in err.getvalue() and "Merged copy" in err.getvalue()
    call_command(*args, "--lora", stdout=StringIO(), stderr=StringIO())
    run.refresh_from_db()
    assert run.serving == DistillRun.Serving.LORA and merging["stopped"] == [8041]
    with pytest.raises(CommandError, match="not served merged"):
        call_command(*args, "--lora", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="has no adapter v9"):
        call_command(
            "distill_serve", "--team", team.team.name, "--adapter-version", "9", "--merged"
        )
    with pytest.raises(CommandError, match="one of the arguments --merged --lora is required"):
        call_command("distill_serve", "--team", team.team.name, "--adapter-version", "1")


def test_a_merged_copy_is_refused_for_what_it_cannot_serve(
    team: TeamSetup, tmp_path: Any, settings: Any, merging: dict[str, list[Any]]
) -> None:
    retired = trained(team, adapter_path=str(tmp_path / "v1"), stage=DistillRun.Stage.RETIRED)
    with pytest.raises(AdapterStageError, match="cannot be served"):
        adapters.adapter_serve_merged(run=retired, user=None)
    failed = trained(team, version=2, status=DistillRun.Status.FAILED)
    with pytest.raises(AdapterStageError, match="cannot be served"):
        adapters.adapter_serve_merged(run=failed, user=None)
    other = trained(team, version=3, base_model="Llama-3-8B")
    with pytest.raises(AdapterStageError, match="not the shipped"):
        adapters.adapter_serve_merged(run=other, user=None)
    settings.LOCAL_LLM_URL = "http://gpu.internal:8000/v1"
    with pytest.raises(AdapterStageError, match="LOCAL_LLM_URL"):
        adapters.adapter_serve_merged(run=trained(team, version=4), user=None)
    assert merging["merged"] == [] and merging["started"] == []


def test_local_llm_starts_a_server_for_each_merged_adapter(
    db: None, tmp_path: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOCAL_LLM_URL = ""
    setup = make_team("Merged", endpoint=EndpointFactory.create(name="local", base_url=""))
    folder = tmp_path / "v1-merged"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    run = trained(setup, adapter_path=str(tmp_path / "v1"))
    endpoint = EndpointFactory.create(name="merged", base_url="http://127.0.0.1:8043/v1")
    DistillRun.objects.filter(pk=run.pk).update(
        endpoint=endpoint, serving=DistillRun.Serving.MERGED, merged_path=str(folder)
    )
    monkeypatch.setattr(localserver, "ensure_server", lambda **k: "http://127.0.0.1:8001/v1")
    companions: list[Any] = []

    def ensure_merged(merged: list[Any], **kwargs: Any) -> list[int]:
        companions.extend(merged)
        return []

    monkeypatch.setattr(localserver, "ensure_merged", ensure_merged)

    call_command("local_llm", "serve", "--background", stdout=StringIO())

    assert companions == [localserver.MergedModel(port=8043, name=run.adapter_name, folder=folder)]


# --- Shadow, promote, rollback ------------------------------------------------------------------


def test_shadow_shadows_the_base_endpoints_tier_and_one_adapter_per_policy(
    team: TeamSetup,
) -> None:
    paid = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, name="paid")
    team.policy.tiers.update(position=2)  # the local tier second, a paid one first
    TierFactory.create(policy=team.policy, position=1, endpoint=paid)
    boss = UserFactory.create(is_staff=True)
    first, second = trained(team, version=1), trained(team, version=2)

    adapters.adapter_shadow_start(run=first, share=Decimal("0.25"), user=boss)
    assert (first.stage, first.shadow_tier, first.shadow_share) == ("shadow", 2, Decimal("0.25"))
    assert first.endpoint is not None  # published on the way

    adapters.adapter_shadow_start(run=second, user=boss)
    first.refresh_from_db()
    assert first.stage == DistillRun.Stage.CANDIDATE
    assert (second.stage, second.shadow_tier) == (DistillRun.Stage.SHADOW, 2)

    adapters.adapter_shadow_stop(run=second, user=boss)
    assert second.stage == DistillRun.Stage.CANDIDATE
    with pytest.raises(AdapterStageError, match="not in shadow"):
        adapters.adapter_shadow_stop(run=second, user=boss)


def test_shadow_refuses_bad_tiers_shares_and_stages(team: TeamSetup) -> None:
    boss = UserFactory.create(is_staff=True)
    other_base = EndpointFactory.create(name="another local")
    stray = trained(team, version=1, base_endpoint=other_base)
    with pytest.raises(AdapterStageError, match="name the tier"):
        adapters.adapter_shadow_start(run=stray, user=boss)
    with pytest.raises(AdapterStageError, match="no tier 5"):
        adapters.adapter_shadow_start(run=stray, tier_position=5, user=boss)
    with pytest.raises(ValueError, match="share"):
        adapters.adapter_shadow_start(run=stray, share=Decimal("1.5"), tier_position=1, user=boss)
    failed = trained(team, version=2, status=DistillRun.Status.FAILED)
    with pytest.raises(AdapterStageError):
        adapters.adapter_shadow_start(run=failed, user=boss)
    promoted = trained(team, version=3)
    adapters.adapter_promote(run=promoted, user=boss)
    with pytest.raises(AdapterStageError, match="promoted"):
        adapters.adapter_shadow_start(run=promoted, user=boss)


def test_promotion_serves_the_tier_with_the_adapter_audited_and_rollback_restores_it(
    team: TeamSetup,
) -> None:
    boss = UserFactory.create(is_staff=True, username="boss")
    run = trained(team)
    adapters.adapter_shadow_start(run=run, user=boss)

    tier = adapters.adapter_promote(run=run, user=boss)

    run.refresh_from_db()
    assert tier.endpoint == run.endpoint
    assert CascadeTier.objects.get(pk=tier.pk).endpoint_id == run.endpoint_id
    assert run.stage == DistillRun.Stage.PROMOTED and run.promoted_by == boss
    assert run.promoted_at is not None and run.replaced_endpoint == team.endpoint
    tier_log = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(CascadeTier), object_pk=str(tier.pk)
    ).latest("timestamp")
    assert tier_log.actor == boss
    assert tier_log.changes_dict["endpoint"] == [str(team.endpoint.pk), str(run.endpoint_id)]
    run_log = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(DistillRun), object_pk=str(run.pk)
    ).latest("timestamp")
    assert run_log.actor == boss and run_log.changes_dict["stage"] == ["shadow", "promoted"]
    with pytest.raises(AdapterStageError, match="promoted"):
        adapters.adapter_promote(run=run, user=boss)

    tier = adapters.adapter_rollback(run=run, user=boss)

    run.refresh_from_db()
    assert CascadeTier.objects.get(pk=tier.pk).endpoint == team.endpoint
    assert run.stage == DistillRun.Stage.RETIRED and run.rolled_back_at is not None
    rollback_log = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(CascadeTier), object_pk=str(tier.pk)
    ).latest("timestamp")
    assert rollback_log.actor == boss
    assert rollback_log.changes_dict["endpoint"] == [str(run.endpoint_id), str(team.endpoint.pk)]
    with pytest.raises(AdapterStageError, match="not promoted"):
        adapters.adapter_rollback(run=run, user=boss)


def test_a_new_promotion_retires_the_last_and_its_rollback_brings_the_last_back(
    team: TeamSetup,
) -> None:
    boss = UserFactory.create(is_staff=True)
    first, second = trained(team, version=1), trained(team, version=2)
    adapters.adapter_promote(run=first, user=boss)

    tier = adapters.adapter_promote(run=second, user=boss)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.stage == DistillRun.Stage.RETIRED and first.rolled_back_at is None
    assert second.replaced_endpoint == first.endpoint and tier.endpoint == second.endpoint

    adapters.adapter_rollback(run=second, user=boss)

    first.refresh_from_db()
    assert first.stage == DistillRun.Stage.PROMOTED
    assert CascadeTier.objects.get(pk=tier.pk).endpoint == first.endpoint


def test_rollback_refuses_when_the_tier_was_changed_since(team: TeamSetup) -> None:
    boss = UserFactory.create(is_staff=True)
    run = trained(team)
    tier = adapters.adapter_promote(run=run, user=boss)
    tier.endpoint = EndpointFactory.create(name="set by hand")
    tier.save()
    with pytest.raises(AdapterStageError, match="no longer serves"):
        adapters.adapter_rollback(run=run, user=boss)


def test_an_experiment_puts_the_adapter_live_for_a_share_of_conversations(
    team: TeamSetup,
) -> None:
    boss = UserFactory.create(is_staff=True)
    paid = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, name="paid")
    TierFactory.create(policy=team.policy, position=2, endpoint=paid, threshold=Decimal("0"))
    run = trained(team)

    experiment = adapters.adapter_experiment_start(run=run, share=Decimal("0.2"), user=boss)

    control, arm = ExperimentArm.objects.filter(experiment=experiment).order_by("position")
    assert (control.policy_id, control.share) == (team.policy.pk, Decimal("0.8"))
    assert arm.share == Decimal("0.2")
    copy = CascadePolicy.objects.get(pk=arm.policy_id)
    assert copy.pk != team.policy.pk and not copy.active
    assert copy.system_prompt == team.policy.system_prompt
    run.refresh_from_db()
    assert list(copy.tiers.order_by("position").values_list("position", "endpoint_id")) == [
        (1, run.endpoint_id),
        (2, paid.pk),
    ]
    team.policy.refresh_from_db()
    assert team.policy.active  # the policy itself is unchanged
    assert team.policy.tiers.get(position=1).endpoint == team.endpoint
    with pytest.raises(ValueError, match="below 1"):
        adapters.adapter_experiment_start(run=run, share=Decimal("1"), user=boss)


# --- Shadow answers -----------------------------------------------------------------------------


@pytest.fixture
def shadowed(team: TeamSetup, monkeypatch: pytest.MonkeyPatch) -> DistillRun:
    run = trained(team)
    adapters.adapter_shadow_start(run=run, share=Decimal("0.5"), user=None)
    rung: list[tuple[int, int]] = []
    monkeypatch.setattr(adapters, "shadow_enqueue", lambda d, r: rung.append((d, r)))
    run.rung = rung  # type: ignore[attr-defined]
    return run


def test_a_drawn_draft_rings_the_shadow_and_the_adapter_answers_apart(
    team: TeamSetup,
    shadowed: DistillRun,
    server: StubServer,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        draft = ready_draft(team, "c1", shadow=True)
        skipped = ready_draft(team, "c2", shadow=False)
    assert shadowed.rung == [(draft.pk, shadowed.pk)]  # type: ignore[attr-defined]
    assert draft.attempts.get().text == BASE_TEXT  # kept for the comparison
    assert skipped.attempts.get().text == ""
    spent = draft.total_cost

    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk) is True

    shadow = draft.attempts.get(purpose=DraftAttempt.Purpose.SHADOW)
    assert shadow.exploratory and shadow.propensity == Decimal("0.5")
    assert shadow.tier == 1 and shadow.endpoint == shadowed.endpoint
    assert shadow.model_name == shadowed.adapter_name and shadow.text == ADAPTER_TEXT
    assert shadow.score is not None and shadow.cost > 0 and shadow.latency_ms >= 0
    asked = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    assert [r["json"]["model"] for r in asked] == [
        "smollm2-135m-instruct",
        "smollm2-135m-instruct",
        shadowed.adapter_name,
    ]
    assert asked[-1]["json"]["messages"] == asked[0]["json"]["messages"]  # the same prompt
    before = (draft.status, draft.text, draft.final_endpoint_id, draft.score)
    draft.refresh_from_db()
    assert (draft.status, draft.text, draft.final_endpoint_id, draft.score) == before
    assert draft.total_cost == spent + shadow.cost

    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk) is False  # once only
    assert len([r for r in server.requests if r["path"].endswith("/chat/completions")]) == 3
    draft.refresh_from_db()
    assert draft.total_cost == spent + shadow.cost


def test_a_shadow_answer_being_asked_elsewhere_is_not_asked_twice(
    team: TeamSetup, shadowed: DistillRun, server: StubServer
) -> None:
    """Two deliveries of the task at once: the one that finds the draft's lock taken leaves
    without asking (the money is spent once)."""
    draft = ready_draft(team, "c1", shadow=True)
    held, release = threading.Event(), threading.Event()

    def other_delivery() -> None:
        try:
            with advisory_lock("csbot.adapters.shadow", draft.pk):
                held.set()
                release.wait(30)
        finally:
            connection.close()

    worker = threading.Thread(target=other_delivery)
    worker.start()
    try:
        assert held.wait(30)
        assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk) is False
    finally:
        release.set()
        worker.join()
    assert not draft.attempts.filter(purpose=DraftAttempt.Purpose.SHADOW).exists()
    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk) is True  # lock freed


def test_no_shadow_answer_once_the_adapter_left_shadow(
    team: TeamSetup, shadowed: DistillRun
) -> None:
    draft = ready_draft(team, "c1", shadow=True)
    adapters.adapter_shadow_stop(run=shadowed, user=None)
    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk) is False
    assert not draft.attempts.filter(purpose=DraftAttempt.Purpose.SHADOW).exists()


def test_disabling_the_adapters_endpoint_stops_its_shadow_answers(
    team: TeamSetup, shadowed: DistillRun, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        drawn = ready_draft(team, "c1", shadow=True)
    assert shadowed.endpoint is not None
    shadowed.endpoint.enabled = False
    shadowed.endpoint.save()  # as the admin saves it (the memo forgets at once)

    with django_capture_on_commit_callbacks(execute=True):
        later = ready_draft(team, "c2", shadow=True)

    assert shadowed.rung == [(drawn.pk, shadowed.pk)]  # type: ignore[attr-defined]
    assert later.attempts.get().text == ""  # not drawn: nothing kept
    assert adapters.draft_shadow(draft_id=drawn.pk, run_id=shadowed.pk) is False


def test_shadow_answers_never_change_the_scorers_labels(
    team: TeamSetup, shadowed: DistillRun
) -> None:
    drafts = [ready_draft(team, f"c{i}", shadow=True) for i in range(4)]
    for i, draft in enumerate(drafts):
        AgentActionFactory.create(
            draft=draft,
            kind="use" if i % 2 else "ignore",
            final_text=draft.text if i % 2 else "Something else entirely.",
            edit_distance=Decimal("0") if i % 2 else Decimal("1"),
        )
    before = scorer_labels(policy_id=team.policy.pk, limit=100)
    assert len(before) == 4

    for draft in drafts:
        assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk)

    assert scorer_labels(policy_id=team.policy.pk, limit=100) == before


def test_the_console_and_the_api_never_show_the_shadow_answer(
    client: Client, team: TeamSetup, shadowed: DistillRun
) -> None:
    draft = ready_draft(team, "c1", shadow=True)
    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk)
    client.force_login(team.agent)

    page = client.get(reverse("console:conversation", args=[draft.message.conversation_id]))
    panel = client.get(reverse("console:draft-panel", args=[draft.message.conversation_id]))
    api = team.api().get(f"/api/v1/drafts/{draft.pk}")

    assert page.status_code == panel.status_code == api.status_code == 200
    for body in (page.content.decode(), panel.content.decode(), api.content.decode()):
        assert ADAPTER_TEXT not in body
    assert BASE_TEXT in page.content.decode()
    assert api.json()["text"] == BASE_TEXT


def test_the_dashboard_lists_shadow_spend_apart(team: TeamSetup, shadowed: DistillRun) -> None:
    draft = ready_draft(team, "c1", shadow=True)
    assert adapters.draft_shadow(draft_id=draft.pk, run_id=shadowed.pk)
    today = timezone.now().date()

    rows = tier_costs(Scope(start=today, end=today + timedelta(days=1)))

    by_label = {row.label: row for row in rows}
    assert set(by_label) == {"Tier 1", "Tier 1 (shadow)"}
    shadow = draft.attempts.get(purpose=DraftAttempt.Purpose.SHADOW)
    assert by_label["Tier 1 (shadow)"].cost_usd == shadow.cost.quantize(
        by_label["Tier 1 (shadow)"].cost_usd
    )
    assert by_label["Tier 1"].attempts == 1


def test_shadow_is_not_a_composer_tool() -> None:
    assert DraftAttempt.Purpose.SHADOW not in {value for value, _ in TOOL_CHOICES}


def test_texts_kept_for_a_shadow_answer_are_no_exploration_to_the_learners(
    team: TeamSetup, server: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shadow draft keeps its tiers' texts; an escalated one then has every tier's text,
    which tuning, the router and the off-policy log would take for an explored draft (a
    biased one: only escalated drafts are complete)."""
    team.policy.tiers.update(threshold=Decimal("1"))  # the local tier always escalates
    paid = EndpointFactory.create(
        kind=ModelEndpoint.Kind.PAID, name="paid", base_url=server.base_url, model_name="gpt"
    )
    TierFactory.create(policy=team.policy, position=2, endpoint=paid)
    run = trained(team)
    adapters.adapter_shadow_start(run=run, share=Decimal("1"), user=None)
    monkeypatch.setattr(adapters, "shadow_enqueue", lambda d, r: None)
    for i in range(3):
        draft = ready_draft(team, f"c{i}", shadow=True)
        assert draft.attempts.filter(text=BASE_TEXT).count() == 2  # both tiers' kept
        AgentActionFactory.create(draft=draft, kind="use", edit_distance=Decimal("0"))
        assert adapters.draft_shadow(draft_id=draft.pk, run_id=run.pk)

    _table, rows = exploration_table(team.policy)
    assert (rows.acted_drafts, rows.rows) == (0, 0)
    labelled = router_rows(
        policy=team.policy, tiers=enabled_tiers(policy_id=team.policy.pk), limit=10
    )
    assert [set(row.labels) for row in labelled] == [{1}, {1}, {1}]  # the shown tier only
    log = policy_log(team.policy).log
    assert log.value.shape == (3, 2) and all(v != v for v in log.value[:, 0])  # NaN: unlabelled
