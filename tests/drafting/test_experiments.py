"""Policy experiments: sticky seeded assignment matching the shares, draft_request drafting
with the conversation's arm, and start / stop / promote with their audit log and errors."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from auditlog.models import LogEntry as AuditEntry
from django.contrib.admin.models import LogEntry as AdminEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from scipy.stats import chisquare

from drafting import experiments, selectors
from drafting.experiments import (
    arm_for,
    arm_index,
    experiment_promote,
    experiment_start,
    experiment_stop,
)
from drafting.models import CascadePolicy, Draft, Experiment, ExperimentArm
from tests.factories import (
    PolicyFactory,
    TeamSetup,
    TierFactory,
    UserFactory,
    ingest,
    make_team,
)

D = Decimal


def _candidate(setup: TeamSetup, name: str = "candidate", **fields: object) -> CascadePolicy:
    """A second, inactive policy of the team on the same endpoint."""
    policy = PolicyFactory.create(team=setup.team, name=name, active=False, **fields)
    TierFactory.create(policy=policy, endpoint=setup.endpoint, position=1)
    return policy


def _boss() -> Any:
    return UserFactory.create(username="boss", is_staff=True, is_superuser=True)


# --- Assignment (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shares",
    [
        [D("0.5"), D("0.5")],
        [D("0.8"), D("0.2")],
        [D("0.2"), D("0.3"), D("0.5")],
        [D("0.6"), D("0.3"), D("0.1")],
    ],
)
def test_assignment_matches_the_shares_on_10000_conversations(shares: list[Decimal]) -> None:
    counts = Counter(
        arm_index(20261203, conversation_id, shares) for conversation_id in range(10000)
    )
    observed = [counts[i] for i in range(len(shares))]
    expected = [float(share) * 10000 for share in shares]
    assert chisquare(observed, expected).pvalue > 0.001
    # And a different seed is a different (but equally fair) split.
    other = [arm_index(7, c, shares) for c in range(200)]
    assert other != [arm_index(20261203, c, shares) for c in range(200)]


def test_assignment_is_a_function_of_the_seed_and_the_conversation_only() -> None:
    shares = [D("0.25"), D("0.25"), D("0.5")]
    first = [arm_index(42, c, shares) for c in range(1000)]
    assert first == [arm_index(42, c, shares) for c in range(1000)]
    # Arms keep their order: a conversation below the first cumulative share stays in arm 0
    # when the later arms' split changes.
    changed = [arm_index(42, c, [D("0.25"), D("0.5"), D("0.25")]) for c in range(1000)]
    assert [c for c in range(1000) if first[c] == 0] == [c for c in range(1000) if changed[c] == 0]


def test_arm_for_reads_the_experiments_arms_in_position_order(db: None) -> None:
    setup = make_team("Pure")
    candidate = _candidate(setup)
    experiment = experiment_start(
        team=setup.team,
        name="pure",
        arms=[("control", setup.policy, D("0.3")), ("candidate", candidate, D("0.7"))],
        seed=99,
        user=_boss(),
    )
    arms = list(experiment.arms.order_by("position"))
    for conversation_id in range(300):
        expected = arms[arm_index(99, conversation_id, [D("0.3"), D("0.7")])]
        assert arm_for(experiment, conversation_id) == expected


# --- draft_request ------------------------------------------------------------------------------


def test_every_draft_of_a_conversation_uses_its_arms_policy(db: None) -> None:
    setup = make_team("Sticky")
    candidate = _candidate(setup)
    experiment = experiment_start(
        team=setup.team,
        name="sticky",
        arms=[("control", setup.policy, D("0.5")), ("candidate", candidate, D("0.5"))],
        seed=11,
        user=_boss(),
    )
    arms = {arm.pk: arm for arm in experiment.arms.all()}
    seen: Counter[str] = Counter()
    for n in range(20):
        drafts = [ingest(setup, f"c{n}", f"c{n}-{turn}").draft for turn in range(3)]
        made = [d for d in drafts if d is not None]
        assert len(made) == 3
        arm_ids = {d.experiment_arm_id for d in made}
        assert len(arm_ids) == 1  # sticky across turns
        arm_id = arm_ids.pop()
        assert arm_id is not None
        arm = arms[arm_id]
        assert {d.policy_id for d in made} == {arm.policy_id}
        assert arm == arm_for(experiment, made[0].message.conversation_id)
        seen[arm.name] += 1
    assert set(seen) == {"control", "candidate"}  # both arms drafted
    # The earlier turns were superseded by the later ones; all stayed in the arm.
    assert Draft.objects.filter(experiment_arm__isnull=True).count() == 0


def test_hold_out_follows_the_arms_policy(db: None) -> None:
    setup = make_team("Holdout")
    always_held = _candidate(setup, holdout_share=D("1"))
    experiment_start(
        team=setup.team,
        name="holdout",
        arms=[("control", setup.policy, D("0.5")), ("held", always_held, D("0.5"))],
        seed=5,
        user=_boss(),
    )
    statuses: dict[str, set[str]] = {"control": set(), "held": set()}
    for n in range(12):
        for turn in range(2):
            draft = ingest(setup, f"h{n}", f"h{n}-{turn}").draft
            assert draft is not None and draft.experiment_arm is not None
            statuses[draft.experiment_arm.name].add(draft.status)
    assert statuses["held"] == {Draft.Status.HELD_OUT}
    assert Draft.Status.HELD_OUT not in statuses["control"]


def test_conversations_before_the_start_and_after_the_stop_use_the_active_policy(db: None) -> None:
    setup = make_team("Window")
    candidate = _candidate(setup)
    early = ingest(setup, "early", "early-1").draft
    assert early is not None
    experiment = experiment_start(
        team=setup.team,
        name="window",
        arms=[("candidate", candidate, D("0.5")), ("also", candidate, D("0.5"))],
        seed=1,
        user=_boss(),
    )
    # The conversation opened before the start keeps the active policy on its next turn.
    again = ingest(setup, "early", "early-2").draft
    assert again is not None
    assert (again.policy_id, again.experiment_arm_id) == (setup.policy.pk, None)
    during = ingest(setup, "during", "during-1").draft
    assert during is not None and during.policy_id == candidate.pk
    experiment_stop(experiment=experiment, user=_boss())
    after = ingest(setup, "during", "during-2").draft
    assert after is not None
    assert (after.policy_id, after.experiment_arm_id) == (setup.policy.pk, None)


def test_another_teams_experiment_does_not_touch_this_team(db: None) -> None:
    ours, theirs = make_team("Ours"), make_team("Theirs")
    experiment_start(
        team=theirs.team,
        name="theirs",
        arms=[("a", theirs.policy, D("0.5")), ("b", _candidate(theirs), D("0.5"))],
        user=_boss(),
    )
    draft = ingest(ours, "x", "x-1").draft
    assert draft is not None
    assert (draft.policy_id, draft.experiment_arm_id) == (ours.policy.pk, None)


# --- Start: validation --------------------------------------------------------------------------


def _errors(exc: ValidationError) -> str:
    return " ".join(str(m) for m in exc.messages)


def test_start_refuses_bad_arms_with_clear_errors(db: None) -> None:
    setup, other = make_team("Valid"), make_team("Other")
    candidate = _candidate(setup)
    boss = _boss()
    cases = [
        ([("only", setup.policy, D("1"))], "at least two arms"),
        ([("a", setup.policy, D("0.5")), ("b", candidate, D("0.4"))], "add up to 0.9, not 1"),
        ([("a", setup.policy, D("0.5")), ("b", other.policy, D("0.5"))], "not a policy of team"),
        ([("a", setup.policy, D("0.5")), ("a", candidate, D("0.5"))], "Two arms are named"),
        ([("a", setup.policy, D("1")), ("b", candidate, D("0"))], "a share is above 0"),
        ([("a", setup.policy, D("0.33333")), ("b", candidate, D("0.66667"))], "4 decimals"),
    ]
    for arms, message in cases:
        with pytest.raises(ValidationError) as caught:
            experiment_start(team=setup.team, name="bad", arms=arms, user=boss)
        assert message in _errors(caught.value), (arms, _errors(caught.value))
    with pytest.raises(ValidationError, match="needs a name"):
        experiment_start(
            team=setup.team,
            name=" ",
            arms=[("a", setup.policy, D("0.5")), ("b", candidate, D("0.5"))],
            user=boss,
        )
    assert not Experiment.objects.exists()


def test_one_experiment_runs_per_team_and_names_are_unique(db: None) -> None:
    setup = make_team("Once")
    candidate = _candidate(setup)
    boss = _boss()
    arms = [("a", setup.policy, D("0.5")), ("b", candidate, D("0.5"))]
    first = experiment_start(team=setup.team, name="first", arms=arms, user=boss)
    with pytest.raises(ValidationError, match="'first' is running"):
        experiment_start(team=setup.team, name="second", arms=arms, user=boss)
    experiment_stop(experiment=first, user=boss)
    with pytest.raises(ValidationError, match="already has an experiment 'first'"):
        experiment_start(team=setup.team, name="first", arms=arms, user=boss)
    second = experiment_start(team=setup.team, name="second", arms=arms, user=boss)
    assert second.status == Experiment.Status.RUNNING
    # Another team runs its own at the same time.
    there = make_team("There")
    experiment_start(
        team=there.team,
        name="first",
        arms=[("a", there.policy, D("0.5")), ("b", _candidate(there), D("0.5"))],
        user=boss,
    )


# --- Stop and promote ---------------------------------------------------------------------------


def _audit(model: type, pk: int) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(model), object_pk=str(pk)
        ).order_by("pk")
    )


def test_start_stop_promote_switch_the_active_policy_and_are_audit_logged(db: None) -> None:
    setup = make_team("Promote")
    candidate = _candidate(setup)
    boss = _boss()
    experiment = experiment_start(
        team=setup.team,
        name="promote",
        arms=[("control", setup.policy, D("0.5")), ("candidate", candidate, D("0.5"))],
        seed=3,
        note="Does the candidate prompt save more?",
        user=boss,
    )
    assert (experiment.seed, experiment.created_by) == (3, boss)
    assert [a.actor_id for a in _audit(Experiment, experiment.pk)] == [boss.pk]
    assert all(
        e.actor_id == boss.pk for a in experiment.arms.all() for e in _audit(ExperimentArm, a.pk)
    )

    stopped = experiment_stop(experiment=experiment, user=boss)
    assert stopped.status == Experiment.Status.STOPPED and stopped.stopped_at is not None
    with pytest.raises(ValidationError, match="is not running"):
        experiment_stop(experiment=experiment, user=boss)

    winner = experiment.arms.get(name="candidate")
    before = timezone.now()
    promoted = experiment_promote(experiment=experiment, arm=winner, user=boss)
    assert promoted.status == Experiment.Status.PROMOTED and promoted.winner == winner
    assert promoted.stopped_at == stopped.stopped_at  # stopped earlier: the stop time stays
    assert list(CascadePolicy.objects.filter(team=setup.team, active=True)) == [candidate]
    assert selectors.active_policy(team_id=setup.team.pk) == candidate
    # The audit log has who changed the experiment and both policies.
    entries = _audit(Experiment, experiment.pk)
    assert [e.actor_id for e in entries] == [boss.pk] * 3
    assert entries[-1].timestamp >= before
    for policy in (setup.policy, candidate):
        last = _audit(CascadePolicy, policy.pk)[-1]
        assert (last.actor_id, "active" in last.changes_dict) == (boss.pk, True)
    # And the admin history of the experiment says what was done.
    history = [e.get_change_message() for e in AdminEntry.objects.order_by("pk")]
    assert history == ["Stopped.", "Promoted arm 'candidate': policy 'candidate' is active."]

    with pytest.raises(ValidationError, match="already promoted"):
        experiment_promote(experiment=experiment, arm=winner, user=boss)


def test_promoting_a_running_experiment_stops_it_and_a_foreign_arm_is_refused(db: None) -> None:
    setup = make_team("Running")
    candidate = _candidate(setup)
    boss = _boss()
    arms = [("control", setup.policy, D("0.5")), ("candidate", candidate, D("0.5"))]
    experiment = experiment_start(team=setup.team, name="one", arms=arms, user=boss)
    other = make_team("Foreign")
    foreign = experiment_start(
        team=other.team,
        name="two",
        arms=[("x", other.policy, D("0.5")), ("y", _candidate(other), D("0.5"))],
        user=boss,
    )
    with pytest.raises(ValidationError, match="is not an arm of"):
        experiment_promote(experiment=experiment, arm=foreign.arms.first(), user=boss)  # type: ignore[arg-type]
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING
    control = experiment.arms.get(name="control")
    promoted = experiment_promote(experiment=experiment, arm=control, user=boss)
    assert promoted.status == Experiment.Status.PROMOTED and promoted.stopped_at is not None
    # The control was already active: it stays the one active policy.
    assert list(CascadePolicy.objects.filter(team=setup.team, active=True)) == [setup.policy]
    # New conversations are drafted by the active policy again, with no arm.
    draft = ingest(setup, "after", "after-1").draft
    assert draft is not None and draft.experiment_arm_id is None


def test_the_running_experiment_is_remembered_briefly_per_process(db: None) -> None:
    setup = make_team("Memo")
    candidate = _candidate(setup)
    ingest(setup, "warm", "warm-1")  # the memo now holds "no experiment"
    experiment = experiment_start(
        team=setup.team,
        name="memo",
        arms=[("a", candidate, D("0.5")), ("b", candidate, D("0.5"))],
        user=_boss(),
    )
    # A save through the ORM clears the memo at once in this process.
    draft = ingest(setup, "new", "new-1").draft
    assert draft is not None and draft.experiment_arm is not None
    assert draft.experiment_arm.experiment_id == experiment.pk
    # A bulk update sends no signal: seen within the memo's seconds (not tested by sleeping).
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.STOPPED, stopped_at=timezone.now()
    )
    experiments._running.clear()
    later = ingest(setup, "new2", "new2-1").draft
    assert later is not None and later.experiment_arm_id is None


# --- The admin ----------------------------------------------------------------------------------


def test_admin_stops_and_promotes_through_confirmation_pages(client: Client, db: None) -> None:
    setup = make_team("Admin")
    candidate = _candidate(setup)
    boss = _boss()
    experiment = experiment_start(
        team=setup.team,
        name="admin",
        arms=[("control", setup.policy, D("0.5")), ("candidate", candidate, D("0.5"))],
        user=boss,
    )
    client.force_login(boss)
    change = client.get(reverse("admin:drafting_experiment_change", args=[experiment.pk]))
    body = change.content.decode()
    assert change.status_code == 200
    stop_url = reverse("admin:drafting_experiment_stop", args=[experiment.pk])
    promote_url = reverse("admin:drafting_experiment_promote", args=[experiment.pk])
    assert stop_url in body and promote_url in body and "candidate" in body
    # The arms cannot be edited, nor an experiment added or deleted, in the admin.
    assert client.get(reverse("admin:drafting_experiment_add")).status_code == 403

    # A GET only asks; nothing changes until the POST.
    confirm = client.get(stop_url)
    assert confirm.status_code == 200 and "Yes, stop it" in confirm.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING
    client.post(stop_url)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.STOPPED
    # Stopping twice is an error message, not a crash.
    again = client.post(stop_url, follow=True)
    assert "is not running" in again.content.decode()

    page = client.get(promote_url)
    assert page.status_code == 200 and "Yes, promote this arm" in page.content.decode()
    no_choice = client.post(promote_url, follow=True)
    assert "Choose the arm to promote" in no_choice.content.decode()
    winner = experiment.arms.get(name="candidate")
    done = client.post(promote_url, {"arm": winner.pk}, follow=True)
    assert "now the team&#x27;s active policy" in done.content.decode()
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner) == (Experiment.Status.PROMOTED, winner)
    assert list(CascadePolicy.objects.filter(team=setup.team, active=True)) == [candidate]
    assert _audit(Experiment, experiment.pk)[-1].actor_id == boss.pk
    # Another experiment's id is not found.
    assert client.get(reverse("admin:drafting_experiment_stop", args=[999999])).status_code == 404


def test_admin_experiment_pages_are_for_admins_only(client: Client, db: None) -> None:
    setup = make_team("Staff")
    experiment = experiment_start(
        team=setup.team,
        name="staff",
        arms=[("a", setup.policy, D("0.5")), ("b", _candidate(setup), D("0.5"))],
        user=_boss(),
    )
    client.force_login(setup.agent)
    response = client.post(reverse("admin:drafting_experiment_stop", args=[experiment.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING


def test_admin_starts_an_experiment_with_the_services_rules(client: Client, db: None) -> None:
    setup = make_team("Start")
    candidate = _candidate(setup)
    boss = _boss()
    client.force_login(boss)
    url = reverse("admin:drafting_experiment_start")
    assert url in client.get(reverse("admin:drafting_experiment_changelist")).content.decode()
    form = {
        "team": setup.team.pk,
        "name": "from the admin",
        "seed": "12",
        "arm_0_name": "control",
        "arm_0_policy": setup.policy.pk,
        "arm_0_share": "0.5",
        "arm_1_name": "candidate",
        "arm_1_policy": candidate.pk,
        "arm_1_share": "0.4",
    }
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "add up to 0.9, not 1" in refused.content.decode()
    half = client.post(url, {**form, "arm_2_name": "third"})
    assert "needs a name, a policy and a share" in half.content.decode()
    assert not Experiment.objects.exists()
    started = client.post(url, {**form, "arm_1_share": "0.5"})
    assert started.status_code == 302
    experiment = Experiment.objects.get()
    assert (experiment.name, experiment.seed, experiment.created_by) == ("from the admin", 12, boss)
    assert [(a.name, a.policy, a.share) for a in experiment.arms.order_by("position")] == [
        ("control", setup.policy, D("0.5")),
        ("candidate", candidate, D("0.5")),
    ]
    assert _audit(Experiment, experiment.pk)[0].actor_id == boss.pk
