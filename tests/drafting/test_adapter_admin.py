"""The adapters' admin (drafting.admin.adapters): the runs' list, a run's page (data snapshot,
hyper-parameters, the loss curve as an SVG chart, validation, candidate vs current), and the
decisions (start/stop shadow, an experiment, promote, roll back) through confirmation pages,
with the services' refusals shown as messages, for admins with the change permission only."""

from __future__ import annotations

import re
from decimal import Decimal as D
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from csbot.models import AgentProfile
from drafting.admin.adapters import loss_chart
from drafting.models import CascadeTier, DistillRun, Draft, DraftAttempt, Experiment
from tests.drafting.factories import distill_run
from tests.factories import (
    EARLY,
    AgentActionFactory,
    AgentProfileFactory,
    DraftAttemptFactory,
    DraftFactory,
    EndpointFactory,
    MessageFactory,
    TeamSetup,
    UserFactory,
    make_team,
)

# Nothing listens there: publishing's load call into the server fails fast, and is only logged.
NO_SERVER = "http://127.0.0.1:9/v1"

CURVE = [
    {"step": 0, "validation_loss": 2.0},
    {"step": 1, "epoch": 0.5, "loss": 2.4},
    {"step": 2, "epoch": 1.0, "loss": 1.9},
    {"step": 2, "validation_loss": 1.5},
]


def _run(setup: TeamSetup, **fields: Any) -> DistillRun:
    values: dict[str, Any] = {
        "endpoint": EndpointFactory.create(name="Acme adapter v1", base_url=NO_SERVER),
        "adapter_path": "/nonexistent/adapter",
        "filters": {"intent": "refund", "min_conversations": 2},
        "data_sha256": "ab" * 32,
        "n_train": 16,
        "n_validation": 4,
        "n_conversations": 12,
        "hyperparameters": {"rank": 8, "epochs": 1, "max_steps": 2},
        "loss_curve": CURVE,
        "validation": {"loss_before": 2.0, "loss": 1.5, "perplexity": 4.4817, "rouge_l": 0.3125},
        "device": "cpu",
        "machine_seconds": D("93.5"),
        "hour_usd": D("0.80"),
        "cost_usd": D("0.020778"),
    }
    values.update(fields)
    return distill_run(setup, **values)


def _boss(client: Client) -> Any:
    user = UserFactory.create(username="boss", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def _shadowed_draft(
    setup: TeamSetup, run: DistillRun, *, sent: str, answers: tuple[str, str]
) -> Draft:
    message = MessageFactory.create(conversation__channel=setup.channel)
    draft = DraftFactory.create(
        message=message, policy=setup.policy, status="ready", ready_at=EARLY
    )
    current, candidate = answers
    DraftAttemptFactory.create(draft=draft, endpoint=setup.endpoint, text=current, score=D("0.5"))
    DraftAttemptFactory.create(
        draft=draft,
        endpoint=run.endpoint,
        purpose=DraftAttempt.Purpose.SHADOW,
        exploratory=True,
        text=candidate,
        score=D("0.7"),
    )
    AgentActionFactory.create(draft=draft, kind="edit", final_text=sent)
    return draft


def _url(name: str, run: DistillRun) -> str:
    return reverse(f"admin:drafting_distillrun_{name}", args=[run.pk])


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- The chart ----------------------------------------------------------------------------------


def test_loss_chart_scales_the_curve_into_the_plot() -> None:
    chart = loss_chart(CURVE, width=520, height=220)
    assert chart is not None
    # Steps 0…2 across x 52…504; losses 1.5…2.4 padded by 5 % across y 184…12.
    first, last = chart.training.split()
    assert first.startswith("278.0,") and last.startswith("504.0,")
    assert [p[2] for p in chart.validation_points] == ["2.000", "1.500"]
    x0, y0, _ = chart.validation_points[0]
    assert x0 == 52 and chart.top < y0 < chart.bottom
    _, y_high, _ = chart.validation_points[1]
    _, y_train_high = map(float, first.split(","))
    assert y_train_high < y0 < y_high  # 2.4 above 2.0 above 1.5 (SVG's y grows downwards)
    assert "training loss 2.400 at step 1 to 1.900 at step 2" in chart.description
    assert "validation loss 2.000 at step 0, 1.500 at step 2" in chart.description
    assert loss_chart([]) is None
    assert loss_chart([{"step": 0, "validation_loss": 1.0}]) is not None  # flat: no division by 0


# --- The pages ----------------------------------------------------------------------------------


def test_the_runs_list_shows_what_each_run_was_trained_on_and_cost(
    client: Client, db: None
) -> None:
    setup = make_team("Acme")
    _run(setup)
    _boss(client)
    response = client.get(reverse("admin:drafting_distillrun_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    for shown in ("2.000 → 1.500", "0.312", "94", "cpu", "0.020778", "Candidate", "Trained"):
        assert shown in body, shown


def test_a_runs_page_has_its_snapshot_curve_and_comparison(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup, stage=DistillRun.Stage.SHADOW, shadow_tier=1)
    _shadowed_draft(
        setup,
        run,
        sent="your refund is on its way",
        answers=("your refund", "your refund is on its way"),
    )
    _shadowed_draft(setup, run, sent="we will call you", answers=("thanks", "we will call you"))
    _boss(client)
    response = client.get(reverse("admin:drafting_distillrun_change", args=[run.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "ab" * 32 in body and "refund" in body  # the snapshot's hash and filters
    assert "max_steps" in body  # the hyper-parameters
    svg = re.search(r"<svg id=\"loss-curve\".*?</svg>", body, re.S)
    assert svg is not None
    chart = svg.group(0)
    assert 'role="img"' in chart and '<title id="loss-curve-title">' in chart
    assert '<desc id="loss-curve-desc">training loss 2.400' in chart
    assert chart.count("<polyline") == 2 and chart.count("<circle") == 2
    assert "<script" not in body.split("<svg", 1)[1].split("</svg>", 1)[0]
    table = re.search(r'<table id="comparison-table">.*?</table>', body, re.S)
    assert table is not None
    rows = table.group(0)
    assert "ROUGE-L to the reply sent" in rows and "Learned scorer" in rows
    # Candidate 1.000 on both drafts, current 0.500 (2 of 2 and 6 tokens) and 0 ("thanks").
    assert re.search(r"figure-rouge_l.*?<td>2</td>\s*<td>0.250</td>\s*<td>1.000</td>", rows, re.S)
    assert "2 drafts paired, 2 with the reply the agent sent" in body
    assert "too few" not in rows.split("figure-p_good")[1].split("</tr>")[0]
    # An admin sees the decisions the stage allows.
    for name in ("shadow-stop", "experiment", "promote"):
        assert f'id="adapter-{name}"' in body
    assert 'id="adapter-rollback"' not in body and 'id="adapter-shadow-start"' in body


def test_a_run_without_shadow_or_curve_says_so(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup, loss_curve=[], validation={}, hyperparameters={})
    _boss(client)
    body = client.get(reverse("admin:drafting_distillrun_change", args=[run.pk])).content.decode()
    assert "No loss recorded yet." in body and 'id="loss-curve"' not in body
    assert "has not been in shadow" in body and "0 drafts paired" in body
    # How it is served, and the command that serves it merged.
    assert '<td id="adapter-serving">LoRA beside the base</td>' in body
    assert f"distill_serve --team {setup.team.pk} --adapter-version {run.version} --merged" in body
    assert body.count("<td>too few</td>") == 10  # each figure: no interval, no verdict


# --- The decisions -------------------------------------------------------------------------------


def test_shadow_start_and_stop_through_confirmation_pages(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup)
    _boss(client)
    page = client.get(_url("shadow_start", run))
    assert page.status_code == 200
    assert "Yes, start shadow" in page.content.decode() and 'name="share"' in page.content.decode()
    run.refresh_from_db()
    assert run.stage == DistillRun.Stage.CANDIDATE  # a GET only asks
    done = client.post(_url("shadow_start", run), {"share": "0.25"}, follow=True)
    run.refresh_from_db()
    assert (run.stage, run.shadow_share, run.shadow_tier) == ("shadow", D("0.25"), 1)
    assert "in shadow on tier 1 for 25 % of the policy" in " ".join(_messages(done))
    stopped = client.post(_url("shadow_stop", run), follow=True)
    run.refresh_from_db()
    assert run.stage == DistillRun.Stage.CANDIDATE
    assert "out of shadow" in " ".join(_messages(stopped))


@pytest.mark.parametrize("share", ["1.5", "-0.1", "0.12345", "many", ""])
def test_a_bad_share_is_a_field_error_and_changes_nothing(
    client: Client, db: None, share: str
) -> None:
    setup = make_team("Acme")
    run = _run(setup)
    _boss(client)
    response = client.post(_url("shadow_start", run), {"share": share})
    assert response.status_code == 200
    assert response.context["form"].errors["share"]
    run.refresh_from_db()
    assert run.stage == DistillRun.Stage.CANDIDATE


def test_promote_and_roll_back_swap_the_tiers_endpoint(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup, stage=DistillRun.Stage.SHADOW, shadow_tier=1)
    _boss(client)
    tier = CascadeTier.objects.get(policy=setup.policy, position=1)
    assert "Yes, promote" in client.get(_url("promote", run)).content.decode()
    promoted = client.post(_url("promote", run), follow=True)
    assert "now serves tier 1" in " ".join(_messages(promoted))
    tier.refresh_from_db()
    run.refresh_from_db()
    assert (tier.endpoint_id, run.stage) == (run.endpoint_id, DistillRun.Stage.PROMOTED)
    assert 'id="adapter-rollback"' in promoted.content.decode()
    rolled = client.post(_url("rollback", run), follow=True)
    assert f"served by {setup.endpoint.name} again" in " ".join(_messages(rolled))
    tier.refresh_from_db()
    run.refresh_from_db()
    assert (tier.endpoint_id, run.stage) == (setup.endpoint.pk, DistillRun.Stage.RETIRED)


def test_try_live_starts_an_experiment(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup)
    _boss(client)
    done = client.post(_url("experiment", run), {"share": "0.2"}, follow=True)
    assert "for 20 % of the team" in " ".join(_messages(done))
    experiment = Experiment.objects.get(team=setup.team)
    shares = sorted(arm.share for arm in experiment.arms.all())
    assert shares == [D("0.2"), D("0.8")]


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("shadow_stop", {}, "is not in shadow"),
        ("rollback", {}, "is not promoted"),
        ("promote", {"status": DistillRun.Status.FAILED}, "has not trained successfully"),
        ("shadow_start", {"status": DistillRun.Status.FAILED}, "has not trained successfully"),
        ("experiment", {"stage": DistillRun.Stage.RETIRED}, "cannot be put live"),
    ],
)
def test_a_refused_decision_is_a_message_not_an_error_page(
    client: Client, db: None, name: str, fields: dict[str, Any], message: str
) -> None:
    setup = make_team("Acme")
    run = _run(setup, **fields)
    _boss(client)
    data = {"share": "0.1"} if name in ("shadow_start", "experiment") else {}
    response = client.post(_url(name, run), data, follow=True)
    assert response.status_code == 200
    assert any(message in m for m in _messages(response)), _messages(response)
    assert DistillRun.objects.get(pk=run.pk).stage == run.stage


# --- Who may act ---------------------------------------------------------------------------------


def test_acting_needs_the_change_permission(client: Client, db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup)
    # A team admin who is staff gets into the admin; with only the view permission they
    # read the run but see no decisions and cannot take one.
    viewer = AgentProfileFactory.create(
        team=setup.team, role=AgentProfile.Role.ADMIN, user__username="viewer"
    ).user
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_distillrun"))
    client.force_login(viewer)
    page = client.get(reverse("admin:drafting_distillrun_change", args=[run.pk]))
    assert page.status_code == 200
    assert not re.search(r'id="adapter-(shadow|experiment|promote|rollback)', page.content.decode())
    for name in ("shadow_start", "shadow_stop", "experiment", "promote", "rollback"):
        assert client.get(_url(name, run)).status_code == 403
        assert client.post(_url(name, run), {"share": "0.1"}).status_code == 403
    viewer.user_permissions.add(Permission.objects.get(codename="change_distillrun"))
    viewer = type(viewer).objects.get(pk=viewer.pk)  # a fresh permission cache
    client.force_login(viewer)
    client.post(_url("shadow_start", run), {"share": "0.1"})
    assert DistillRun.objects.get(pk=run.pk).stage == DistillRun.Stage.SHADOW
    # A run that does not exist is not found.
    assert (
        client.get(reverse("admin:drafting_distillrun_promote", args=[999999])).status_code == 404
    )


def test_decisions_need_the_csrf_token(db: None) -> None:
    setup = make_team("Acme")
    run = _run(setup)
    client = Client(enforce_csrf_checks=True)
    _boss(client)
    assert client.post(_url("shadow_start", run), {"share": "0.1"}).status_code == 403
    page = client.get(_url("shadow_start", run)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    response = client.post(
        _url("shadow_start", run), {"share": "0.1", "csrfmiddlewaretoken": token.group(1)}
    )
    assert response.status_code == 302
    assert DistillRun.objects.get(pk=run.pk).stage == DistillRun.Stage.SHADOW
