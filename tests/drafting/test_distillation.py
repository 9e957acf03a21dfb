"""Distillation runs (drafting.distillation, `manage.py distill_train`): the run's row and its
figures, versions per team, failures recorded and charged, the training cost booked once as a
fixed cost that break-even counts, and the nightly retrain's switch and threshold."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounting.breakeven import break_even
from accounting.models import FixedCost
from drafting.distillation import (
    DistillRunError,
    distill_cost,
    distill_nightly,
    distill_run_train,
)
from drafting.learning.distill import Hyper
from drafting.learning.distill_data import ExportFilters, distill_examples, write_export
from drafting.models import AgentAction, CascadePolicy, DistillRun, ModelEndpoint
from tests.factories import (
    AgentActionFactory,
    ConversationFactory,
    DraftFactory,
    EndpointFactory,
    MessageFactory,
    PolicyFactory,
    TeamSetup,
    TierFactory,
    make_team,
)

pytestmark = pytest.mark.django_db

TINY = Hyper(max_steps=2, generate_validation=0, max_length=256, batch_size=4)
TINY_OPTIONS = [
    "--max-steps=2",
    "--generate-validation=0",
    "--max-length=256",
    "--batch-size=4",
]
# A price at which even a millisecond of machine time costs something (cost assertions).
DEAR = Decimal("1000000")
TOPICS = (
    ("refund", "Your refund was issued today and arrives within 3-5 business days."),
    ("parcel", "Your parcel ships tomorrow morning; the tracking link follows by email."),
    ("password", "Use the Forgot password link on the sign-in page to set a new one."),
    ("invoice", "I have sent the invoice again to the address on your account."),
)


@pytest.fixture(autouse=True)
def adapter_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DISTILL_ADAPTER_DIR = tmp_path / "adapters"
    return settings.DISTILL_ADAPTER_DIR


@pytest.fixture
def acme() -> TeamSetup:
    return make_team("Acme")


def sent_replies(
    setup: TeamSetup, count: int, *, acted_at: datetime | None = None, start: int = 0
) -> None:
    """`count` conversations of `setup`'s team, each a customer question whose draft the agent
    sent (used as is, every third one edited)."""
    when = acted_at or timezone.now() - timedelta(hours=1)
    for i in range(start, start + count):
        topic, answer = TOPICS[i % len(TOPICS)]
        conversation = ConversationFactory.create(channel=setup.channel)
        inbound = MessageFactory.create(
            conversation=conversation, text=f"Hello, a question about my {topic} number {i}?"
        )
        draft = DraftFactory.create(
            message=inbound, policy=setup.policy, status="ready", text=answer, ready_at=when
        )
        edited = i % 3 == 2
        AgentActionFactory.create(
            draft=draft,
            kind=AgentAction.Kind.EDIT if edited else AgentAction.Kind.USE,
            final_text=f"Thanks for asking! {answer}" if edited else answer,
            edit_distance=Decimal("0.3") if edited else Decimal("0"),
            agent=setup.agent,
            shown_at=when - timedelta(seconds=20),
            acted_at=when,
        )


def few(setup: TeamSetup, **overrides: Any) -> ExportFilters:
    """Export filters for the small sets of these tests (4 conversations suffice)."""
    return ExportFilters(team_id=setup.team.pk, min_conversations=4, **overrides)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


# --- A run and its row ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_trains_an_adapter_and_the_run_row_holds_every_figure(
    acme: TeamSetup, adapter_dir: Path
) -> None:
    sent_replies(acme, 20)
    out, err = StringIO(), StringIO()
    call_command(
        "distill_train",
        f"--team={acme.team.name}",
        "--min-conversations=4",
        *TINY_OPTIONS,
        "--json",
        stdout=out,
        stderr=err,
    )
    shown = json.loads(out.getvalue())
    run = DistillRun.objects.get()
    assert shown["run_id"] == run.pk
    assert run.status == DistillRun.Status.SUCCEEDED
    assert (run.team, run.policy, run.version) == (acme.team, acme.policy, 1)
    assert run.base_endpoint == acme.endpoint
    assert run.base_model == "SmolLM2-135M-Instruct"
    assert run.adapter_name == f"csbot-{acme.team.pk}-v1"
    folder = adapter_dir / run.adapter_name
    assert Path(run.adapter_path) == folder
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    manifest = json.loads((folder / "data" / "manifest.json").read_text())
    assert run.data_sha256 == manifest["data_sha256"]
    assert run.filters["team_id"] == acme.team.pk
    assert run.filters["min_conversations"] == 4
    assert run.n_train + run.n_validation == 20
    assert run.n_train > 0 and run.n_validation > 0
    assert run.n_conversations == 20
    assert run.hyperparameters == TINY.as_dict()
    steps = [point for point in run.loss_curve if "loss" in point]
    assert [point["step"] for point in steps] == [1, 2]
    assert run.validation["loss_before"] > 0 and run.validation["loss"] > 0
    assert run.validation["steps"] == 2
    assert run.device == "cpu"
    assert run.machine_seconds > 0
    assert run.hour_usd == Decimal("0.80")  # the base endpoint's price in force
    assert run.cost_usd == distill_cost(machine_seconds=run.machine_seconds, hour_usd=run.hour_usd)
    assert run.cost_usd > 0
    assert run.started_at is not None and run.finished_at is not None
    assert run.finished_at >= run.started_at
    assert run.error == ""
    # The figures the command printed are the row's.
    assert shown["version"] == 1 and shown["cost_usd"] == str(run.cost_usd)
    assert shown["n_train"] == run.n_train and shown["loss_after"] == run.validation["loss"]
    assert "step 2/2" in err.getvalue()
    # Its cost is booked once, as a one-off of the policy.
    cost = FixedCost.objects.get()
    assert (cost.distill_run, cost.policy, cost.kind) == (run, acme.policy, "one_off")
    assert cost.amount_usd == run.cost_usd
    assert cost.name == f"Fine-tuning {run.adapter_name}"


def test_versions_count_per_team_and_name_the_adapter(acme: TeamSetup) -> None:
    other = make_team("Globex")
    # Runs that fail at the export (too few conversations) take their version all the same.
    first = distill_run_train(policy=acme.policy, filters=few(acme), hour_usd=DEAR)
    second = distill_run_train(policy=acme.policy, filters=few(acme), hour_usd=DEAR)
    theirs = distill_run_train(policy=other.policy, filters=few(other), hour_usd=DEAR)
    assert (first.version, second.version, theirs.version) == (1, 2, 1)
    assert second.adapter_name == f"csbot-{acme.team.pk}-v2"
    assert theirs.adapter_name == f"csbot-{other.team.pk}-v1"


def test_a_failed_run_is_recorded_with_the_time_it_used_and_charged(acme: TeamSetup) -> None:
    sent_replies(acme, 2)
    run = distill_run_train(policy=acme.policy, filters=few(acme), hour_usd=DEAR)
    run.refresh_from_db()
    assert run.status == DistillRun.Status.FAILED
    assert "TooFewConversations" in run.error and "only 2 conversations" in run.error
    assert run.finished_at is not None
    assert run.machine_seconds > 0
    assert run.cost_usd == distill_cost(machine_seconds=run.machine_seconds, hour_usd=DEAR)
    assert run.cost_usd > 0
    assert FixedCost.objects.get(distill_run=run).amount_usd == run.cost_usd


def test_without_a_price_in_force_the_run_costs_nothing_and_says_so(acme: TeamSetup) -> None:
    endpoint = EndpointFactory.create(price=None)
    policy = PolicyFactory.create(team=acme.team, active=False)
    TierFactory.create(policy=policy, endpoint=endpoint)
    said: list[str] = []
    run = distill_run_train(policy=policy, filters=few(acme), progress=said.append)
    assert run.hour_usd == 0 and run.cost_usd == 0
    assert any("no price in force" in line for line in said)
    assert not FixedCost.objects.exists()


def test_a_policy_without_a_local_tier_records_nothing(acme: TeamSetup) -> None:
    paid = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID)
    off = EndpointFactory.create(enabled=False)
    policy = PolicyFactory.create(team=acme.team, active=False)
    TierFactory.create(policy=policy, endpoint=off, position=1)
    TierFactory.create(policy=policy, endpoint=paid, position=2)
    with pytest.raises(DistillRunError, match="no enabled local tier"):
        distill_run_train(policy=policy)
    assert not DistillRun.objects.exists()


def test_another_teams_export_is_refused_before_any_run(acme: TeamSetup, tmp_path: Path) -> None:
    other = make_team("Globex")
    sent_replies(other, 4)
    write_export(distill_examples(few(other)), tmp_path / "theirs")
    with pytest.raises(DistillRunError, match="another team's"):
        distill_run_train(policy=acme.policy, data_dir=tmp_path / "theirs")
    assert not DistillRun.objects.exists()


# --- The cost in break-even -----------------------------------------------------------------------


def _running_run(setup: TeamSetup) -> DistillRun:
    return DistillRun.objects.create(
        team=setup.team,
        policy=setup.policy,
        version=1,
        base_endpoint=setup.endpoint,
        base_model="SmolLM2-135M-Instruct",
        adapter_name=f"csbot-{setup.team.pk}-v1",
        status=DistillRun.Status.RUNNING,
    )


def test_a_finished_run_is_booked_once_and_moves_break_even_by_its_cost(acme: TeamSetup) -> None:
    today = timezone.localdate()
    end = next_month(today)
    FixedCost.objects.create(
        name="Integration", kind="one_off", policy=acme.policy, amount_usd=Decimal("50")
    )
    before = {t.id: t for t in break_even(end=end) if t.target == "policy"}[acme.policy.pk]
    run = _running_run(acme)
    assert FixedCost.objects.count() == 1  # still training: nothing booked
    run.machine_seconds = Decimal("90")
    run.hour_usd = Decimal("2.40")
    run.cost_usd = distill_cost(machine_seconds=run.machine_seconds, hour_usd=run.hour_usd)
    run.status = DistillRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save()
    assert run.cost_usd == Decimal("0.06")
    run.save()  # saved again (a stage change, the admin): still one booking
    booked = FixedCost.objects.get(distill_run=run)
    assert booked.starts_on == today and booked.amount_usd == Decimal("0.06")
    assert FixedCost.objects.count() == 2
    after = {t.id: t for t in break_even(end=end) if t.target == "policy"}[acme.policy.pk]
    assert after.one_off_usd - before.one_off_usd == run.cost_usd
    assert after.fixed_costs_usd - before.fixed_costs_usd == run.cost_usd
    assert (
        after.series[-1].cumulative_fixed_costs_usd - before.series[-1].cumulative_fixed_costs_usd
        == run.cost_usd
    )


def test_a_corrected_cost_updates_the_same_booking(acme: TeamSetup) -> None:
    run = _running_run(acme)
    run.status = DistillRun.Status.FAILED
    run.finished_at = timezone.now()
    run.cost_usd = Decimal("1.25")
    run.save()
    run.cost_usd = Decimal("1.50")
    run.save()
    assert list(FixedCost.objects.values_list("amount_usd", flat=True)) == [Decimal("1.50")]


# --- The nightly retrain ---------------------------------------------------------------------------


def test_nightly_retrain_is_off_by_default(acme: TeamSetup) -> None:
    sent_replies(acme, 12)
    assert CascadePolicy._meta.get_field("distill_nightly").default is False
    assert distill_nightly(hyper=TINY) == []
    assert not DistillRun.objects.exists()


def test_nightly_retrain_waits_for_enough_new_replies(acme: TeamSetup) -> None:
    acme.policy.distill_nightly = True
    acme.policy.distill_min_replies = 12
    acme.policy.save()
    sent_replies(acme, 11)
    assert distill_nightly(hyper=TINY) == []
    assert not DistillRun.objects.exists()


def test_nightly_retrain_skips_a_team_with_a_run_still_training(acme: TeamSetup) -> None:
    acme.policy.distill_nightly = True
    acme.policy.distill_min_replies = 10
    acme.policy.save()
    _running_run(acme)  # status running
    sent_replies(acme, 12)
    assert distill_nightly(hyper=TINY) == []
    assert DistillRun.objects.count() == 1


@pytest.mark.slow
def test_nightly_retrain_trains_once_enough_replies_are_new(acme: TeamSetup) -> None:
    acme.policy.distill_nightly = True
    acme.policy.distill_min_replies = 10
    acme.policy.save()
    sent_replies(acme, 20, acted_at=timezone.now() - timedelta(days=2))
    [run] = distill_nightly(hyper=TINY, min_conversations=4)
    assert run.status == DistillRun.Status.SUCCEEDED, run.error
    assert (run.policy, run.version) == (acme.policy, 1)
    assert run.filters["policy_id"] == acme.policy.pk and run.filters["since"] is None
    assert run.n_train + run.n_validation == 20
    # Nothing new since: the next night trains nothing.
    assert distill_nightly(hyper=TINY, min_conversations=4) == []
    # Enough new replies: the next run learns from those since the last one.
    sent_replies(acme, 10, start=20, acted_at=timezone.now() + timedelta(minutes=1))
    [second] = distill_nightly(hyper=TINY, min_conversations=4)
    assert second.version == 2
    assert second.filters["since"] == timezone.localdate(run.created_at).isoformat()


def test_the_beat_schedule_runs_the_nightly_retrain(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["retrain-adapters"]
    assert entry["task"] == "drafting.tasks.adapters_retrain"
    from drafting.tasks import adapters_retrain_task

    assert adapters_retrain_task.name == entry["task"]
    assert adapters_retrain_task() == []  # no policy has it on


# --- The command's errors and text -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--team=Nobody"], "no team"),
        (["--team=Acme", "--policy=999999"], "has no policy 999999"),
        (["--team=Acme", "--epochs=0"], "--epochs must be at least 1"),
        (["--team=Acme", "--learning-rate=0"], "--learning-rate must be at least"),
        (["--team=Acme", "--since=2025-13-01"], "not a date"),
        (["--team=Acme", "--since=2025-03-02", "--until=2025-03-01"], "--since is after --until"),
        (["--team=Acme", "--validation-share=1"], "--validation-share"),
        (["--team=Acme", "--hour-usd=-1"], "--hour-usd must be zero or more"),
        (["--team=Acme", "--hour-usd=abc"], "--hour-usd is not a number"),
        (["--team=Acme", "--data=/nonexistent"], "not an export folder"),
        (["--team=Acme", "--data=/tmp", "--since=2025-01-01"], "--since unused"),
    ],
)
def test_the_command_refuses_bad_input_and_records_nothing(
    acme: TeamSetup, arguments: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("distill_train", *arguments, stdout=StringIO(), stderr=StringIO())
    assert not DistillRun.objects.exists()


def test_the_command_refuses_another_teams_policy(acme: TeamSetup) -> None:
    other = make_team("Globex")
    with pytest.raises(CommandError, match=f"has no policy {other.policy.pk}"):
        call_command(
            "distill_train", "--team=Acme", f"--policy={other.policy.pk}", stdout=StringIO()
        )


def test_the_command_reports_a_failed_run_and_exits_non_zero(acme: TeamSetup) -> None:
    sent_replies(acme, 2)
    out = StringIO()
    with pytest.raises(CommandError, match=r"failed: TooFewConversations.*booked"):
        call_command(
            "distill_train",
            "--team",
            str(acme.team.pk),
            "--min-conversations=4",
            "--hour-usd=1000000",
            stdout=out,
            stderr=StringIO(),
        )
    run = DistillRun.objects.get()
    text = out.getvalue()
    assert f"{run.adapter_name} (version 1, failed) in {run.adapter_path}" in text
    assert f"at $1000000.000000/h: ${run.cost_usd}" in text


def test_a_run_started_on_a_day_is_booked_on_the_day_it_finished(acme: TeamSetup) -> None:
    run = _running_run(acme)
    run.status = DistillRun.Status.SUCCEEDED
    run.cost_usd = Decimal("3")
    run.finished_at = datetime(2025, 5, 31, 23, 30, tzinfo=UTC) + timedelta(hours=1)
    run.save()
    assert FixedCost.objects.get().starts_on == timezone.localdate(run.finished_at)
