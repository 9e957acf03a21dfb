"""The demo's past (`seed_demo` → accounting's `demo_history` → csbot.demo.history): sixty days
that give the manager's dashboard, break-even and the knowledge figures something to show,
seeded once, and removable without touching anything else."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

import csbot.demo
from accounting.experiments import experiment_period, experiment_results
from accounting.facts import Scope, raw_facts, scope_facts
from accounting.knowledge import knowledge_value
from accounting.models import DailyFact, FixedCost, RolledUpDay
from accounting.selectors import encs_figures
from csbot.demo import DEMO_TEAM
from csbot.demo.history import (
    AGENTS,
    EXPERIMENT,
    EXPERIMENT_DAYS,
    HISTORY_CHANNEL,
    PAID_POLICY,
    WITHHOLDING_POLICY,
)
from csbot.models import Conversation, Message, Team
from drafting.models import (
    ActionValues,
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    Experiment,
    ExperimentArm,
)
from tests.factories import ConversationFactory, TeamSetup

pytestmark = pytest.mark.slow


def seed(*args: str) -> str:
    out = StringIO()
    call_command("accounting_defaults", stdout=StringIO())  # as `make run`: the rate first
    call_command("seed_demo", "--password", "x", *args, stdout=out)
    return out.getvalue()


def history_scope(team: Team) -> Scope:
    today = timezone.localdate()
    return Scope(
        start=today - timedelta(days=70), end=today + timedelta(days=1), team_ids=(team.pk,)
    )


def test_the_demo_past_gives_the_dashboard_figures_and_is_seeded_once(db: None) -> None:
    out = seed()
    assert "Demo history (demo data" in out
    team = Team.objects.get(name=DEMO_TEAM)
    history = Conversation.objects.filter(team=team, channel__name=HISTORY_CHANNEL)
    assert history.count() > 1000
    assert not history.filter(status=Conversation.Status.OPEN).exists()  # not live work
    assert Message.objects.filter(channel__name=HISTORY_CHANNEL).count() > 3000

    actions = AgentAction.objects.filter(inbound_message__channel__name=HISTORY_CHANNEL)
    kinds = {kind: actions.filter(kind=kind).count() for kind in ("use", "edit", "ignore", "none")}
    assert all(kinds.values()), kinds
    assert set(actions.values_list("agent__username", flat=True)) == {h.username for h in AGENTS}
    drafts = Draft.objects.filter(message__channel__name=HISTORY_CHANNEL)
    assert drafts.filter(status=Draft.Status.HELD_OUT).count() > 50
    assert set(drafts.values_list("policy__name", flat=True)) == {
        PAID_POLICY,
        "Demo cascade",
        WITHHOLDING_POLICY,
    }
    cost = FixedCost.objects.get()
    assert cost.kind == FixedCost.Kind.MONTHLY and "demo" in cost.name

    # Habits show: the fast accepter uses more and is quicker than the slow agent.
    figures = encs_figures(history_scope(team), group_by="agent")
    groups = {g.name: g.figures for g in figures.groups or ()}
    ana, dev = groups["demo-ana"], groups["demo-dev"]
    assert ana.shares["use"] > groups["demo-ben"].shares["use"]
    assert groups["demo-chloe"].shares["ignore"] > ana.shares["ignore"]
    fast, slow = ana.handle_seconds["use"], dev.handle_seconds["use"]
    assert fast is not None and slow is not None and fast < slow

    totals = figures.totals
    assert all(totals.shares[kind] > 0 for kind in ("use", "edit", "ignore"))
    assert totals.encs_usd > Decimal(100) and totals.model_cost_usd > 0
    # A fifth of the turns are opened on arrival: the agent waits, and the report prices it.
    assert totals.waited_drafts > 50 and totals.wait_cost_usd > 0
    # The action values withholding and routing decide with, measured from the past.
    values = ActionValues.objects.get(team__name=DEMO_TEAM)
    assert values.s_use > values.s_edit > 0 > values.s_ignore and values.n_actions > 30
    (baseline,) = figures.baselines.values()
    assert baseline.source == "measured"
    (target,) = figures.break_even.targets
    assert target.name == "Demo cascade" and target.monthly_usd == cost.amount_usd
    assert target.series and target.break_even_messages_per_year is not None
    knowledge = knowledge_value(history_scope(team))
    assert knowledge.grounded_drafts > 0 and knowledge.grounded_encs_usd > 0
    assert knowledge.macro_drafts > 0 and knowledge.macros

    # Accounting rolled the settled days up, and its rollup says what the raw rows say.
    scope = history_scope(team)
    assert RolledUpDay.objects.filter(stale=False).count() >= 55
    assert DailyFact.objects.exists()
    rolled = Counter((f.key, f.drafts, f.cost) for f in scope_facts(scope))
    raw = Counter((f.key, f.drafts, f.cost) for f in raw_facts(scope.start, scope.end))
    assert rolled == raw

    counts = (history.count(), drafts.count(), FixedCost.objects.count())
    again = seed()
    assert "Demo history exists; nothing to do" in again
    assert (history.count(), drafts.count(), FixedCost.objects.count()) == counts


def test_the_demo_past_ends_with_a_stopped_withholding_experiment(db: None) -> None:
    """The last weeks of the past are a finished experiment, control against withholding, 50/50:
    each arm's drafts are its policy's, the withholding arm withholds the weak drafts but for a
    random tenth, and the experiment's results have figures for both arms."""
    seed()
    team = Team.objects.get(name=DEMO_TEAM)
    live = CascadePolicy.objects.get(team=team, active=True)
    experiment = Experiment.objects.get(team=team, name=EXPERIMENT)
    today = timezone.localdate()
    assert experiment.status == Experiment.Status.STOPPED and experiment.stopped_at is not None
    started = timezone.localdate(experiment.started_at)
    assert today - timedelta(days=EXPERIMENT_DAYS) <= started
    assert started < timezone.localdate(experiment.stopped_at) < today

    control, withholding = experiment.arms.select_related("policy").order_by("position")
    assert (control.name, control.policy, control.share) == ("control", live, Decimal("0.5"))
    assert withholding.name == "withholding" and withholding.share == Decimal("0.5")
    policy = withholding.policy
    assert policy.name == WITHHOLDING_POLICY and not policy.active
    assert policy.withhold_negative and policy.withhold_show_share == Decimal("0.1")
    assert not live.withhold_negative
    tiers = list(CascadeTier.objects.filter(policy__in=[live, policy]).order_by("position"))
    assert {(t.position, t.endpoint_id, t.threshold) for t in tiers if t.policy_id == live.pk} == {
        (t.position, t.endpoint_id, t.threshold) for t in tiers if t.policy_id == policy.pk
    }

    drafts = Draft.objects.filter(message__channel__name=HISTORY_CHANNEL)
    for arm in (control, withholding):
        of_arm = drafts.filter(experiment_arm=arm)
        assert of_arm.count() > 100
        assert set(of_arm.values_list("policy_id", flat=True)) == {arm.policy_id}
        assert not of_arm.filter(
            message__conversation__created_at__lt=experiment.started_at
        ).exists()
        assert not of_arm.filter(created_at__gte=experiment.stopped_at).exists()
    # Outside the experiment's days nothing has an arm; yesterday is the live policy's again.
    assert not drafts.filter(experiment_arm=None, policy=policy).exists()
    assert drafts.filter(experiment_arm=None, created_at__gte=experiment.stopped_at).exists()

    # The control policy does not withhold: nothing of it is decided.
    assert not drafts.filter(policy=live, expected_encs__isnull=False).exists()
    assert not drafts.filter(status=Draft.Status.WITHHELD).exclude(policy=policy).exists()
    withheld = drafts.filter(status=Draft.Status.WITHHELD)
    assert withheld.count() > 5
    for draft in withheld:
        assert draft.text and draft.ready_at is not None and draft.score is not None
        assert draft.expected_encs is not None and draft.expected_encs < 0
        assert draft.decision_probability == Decimal("0.9")
        assert draft.knowledge == Draft.Knowledge.NONE_FOUND
        assert draft.action.kind == AgentAction.Kind.NONE  # the agent wrote unaided
    # A random tenth of the negative ones was shown anyway, and acted on as any shown draft.
    shown_anyway = drafts.filter(status=Draft.Status.READY, expected_encs__lt=0)
    assert shown_anyway.exists()
    assert set(shown_anyway.values_list("decision_probability", flat=True)) == {Decimal("0.1")}
    assert not shown_anyway.filter(action__kind=AgentAction.Kind.NONE).exists()
    # The rest of the arm's model drafts were decided worth showing; macro offers are not decided.
    worth = drafts.filter(policy=policy, status=Draft.Status.READY, expected_encs__gt=0)
    assert worth.exists()
    assert set(worth.values_list("decision_probability", flat=True)) == {Decimal(1)}
    assert not drafts.filter(policy=policy, expected_encs__isnull=False, score=None).exists()

    results = experiment_results(experiment)
    assert (results.start, results.last) == (
        experiment_period(experiment).start,
        timezone.localdate(experiment.stopped_at),
    )
    assert [a.name for a in results.arms] == ["control", "withholding"]
    for result in results.arms:
        assert result.messages > 100 and result.held_out > 0
        assert result.encs_per_message_usd.value is not None
        assert result.encs_per_message_usd.ci95 is not None
        assert result.p_use.value is not None and result.cost_per_message_usd.value is not None
    (comparison,) = results.comparisons
    assert comparison.arm.name == "withholding"
    assert comparison.encs_per_message_usd.ci95 is not None


def test_removing_the_past_deletes_exactly_the_demo_rows(db: None, acme: TeamSetup) -> None:
    seed("--no-history")
    team = Team.objects.get(name=DEMO_TEAM)
    other = ConversationFactory.create(team=acme.team, channel=acme.channel)
    live = set(Conversation.objects.filter(team=team).values_list("pk", flat=True))
    live_drafts = set(Draft.objects.values_list("pk", flat=True))
    policies = set(CascadePolicy.objects.values_list("pk", flat=True))
    call_command("demo_history", "--days", "21", stdout=StringIO())
    assert Conversation.objects.filter(channel__name=HISTORY_CHANNEL).exists()
    experiment = Experiment.objects.get(team=team, name=EXPERIMENT)
    assert experiment.arms.count() == 2
    assert Draft.objects.filter(status=Draft.Status.WITHHELD).exists()
    assert RolledUpDay.objects.exists()

    out = StringIO()
    call_command("seed_demo", "--remove-history", stdout=out)
    assert "Demo history removed" in out.getvalue()
    assert set(Conversation.objects.filter(team=team).values_list("pk", flat=True)) == live
    assert set(Draft.objects.values_list("pk", flat=True)) == live_drafts
    assert not CascadePolicy.objects.filter(name=PAID_POLICY).exists()
    assert not Experiment.objects.filter(pk=experiment.pk).exists()
    assert not ExperimentArm.objects.exists()
    assert not CascadePolicy.objects.filter(name=WITHHOLDING_POLICY).exists()
    assert set(CascadePolicy.objects.values_list("pk", flat=True)) == policies
    assert not FixedCost.objects.exists()
    assert not team.agents.filter(user__username__in=[h.username for h in AGENTS]).exists()
    assert Conversation.objects.filter(pk=other.pk).exists()
    # The days it had are rolled up again: nothing left of it in the rollup.
    assert not DailyFact.objects.exists()


def test_seed_demo_without_history_writes_no_past(db: None) -> None:
    seed("--no-history")
    assert not Conversation.objects.filter(channel__name=HISTORY_CHANNEL).exists()
    assert not FixedCost.objects.exists()


def test_the_demo_past_is_made_from_the_demo_texts_only() -> None:
    """A user's machine has only the repository: nothing of the past may come from the shared
    data sets beside it."""
    folder = Path(csbot.demo.__file__).parent
    command = Path(__file__).parents[2] / "accounting/management/commands/demo_history.py"
    for path in [*folder.glob("*.py"), *folder.glob("*.json"), command]:
        text = path.read_text()
        assert "../shared" not in text and "/shared/" not in text, path
