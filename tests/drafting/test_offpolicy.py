"""Off-policy estimates (drafting.learning.offpolicy): the replay of a rule set on a logged
draft, the estimators' unbiasedness and interval coverage on synthetic logs with known
propensities, the propensity recorded by exploration, and the estimate on the tuning page."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from drafting import services as drafting
from drafting.learning import offpolicy as op
from drafting.models import ActionValues, CascadePolicy, DraftAttempt
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import (
    EARLY,
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    EndpointFactory,
    PolicyFactory,
    TeamFactory,
    TierFactory,
    UserFactory,
    ingest,
)
from tests.http_stub import Reply, chat_completion, openai_stub

# --- Synthetic logs (no database) ---------------------------------------------------------------

Population = tuple[Any, Any, Any, Any, Any]
LOGGED = (0.5, 0.0)  # the policy in force: tier 1 kept from g ≥ 0.5


def population(rng: np.random.Generator, n: int = 400) -> Population:
    """Messages of three intents (tier 1 good for 90 %, 50 %, 20 % of the confident ones), two
    tiers: tier 1 cheap and right more often when its score is high, tier 2 dear and right 85 %
    of the time; 3 % of calls fail. Values: use 0.83, edit 0.50, ignore −0.08 USD."""
    stratum = rng.integers(0, 3, n)
    ease = np.array([0.9, 0.5, 0.2])[stratum]
    score = rng.uniform(0, 1, (n, 2))
    good = np.empty((n, 2), dtype=bool)
    good[:, 0] = rng.uniform(size=n) < ease * (0.3 + 0.7 * score[:, 0])
    good[:, 1] = rng.uniform(size=n) < 0.85
    used = rng.uniform(size=(n, 2)) < 0.5
    value = np.where(good, np.where(used, 0.83, 0.5), -0.08)
    state = np.where(rng.uniform(size=(n, 2)) < 0.03, op.FAILED, op.ANSWERED)
    cost = np.where(state == op.FAILED, 0.0, np.tile([0.0005, 0.02], (n, 1)))
    return stratum, score, value, cost, state


def complete_log(pop: Population) -> op.OffPolicyLog:
    """Every tier's answer to every message: what the truth is computed on."""
    stratum, score, value, cost, state = pop
    n, k = score.shape
    return op.OffPolicyLog(
        state=state,
        score=score,
        cost=cost,
        value=value,
        revealed=np.ones((n, k), dtype=bool),
        value_revealed=np.ones((n, k), dtype=bool),
        explored=np.zeros(n, dtype=bool),
        propensity=np.ones(n),
        stratum=stratum,
    )


def logged(rng: np.random.Generator, pop: Population) -> op.OffPolicyLog:
    """What the product logs under LOGGED: the tiers its cascade asked, the value of the draft
    kept (the agent saw it), and for explored drafts (each drawn with a known propensity of 0.2
    or 0.4) every tier's answer and label."""
    stratum, score, value, cost, state = pop
    n, k = score.shape
    revealed, chosen = np.zeros((n, k), dtype=bool), np.full(n, -1)
    open_ = np.ones(n, dtype=bool)
    for j in range(k):
        revealed[:, j] = open_
        answered = open_ & (state[:, j] == op.ANSWERED)
        chosen[answered] = j
        open_ &= ~(answered & ((score[:, j] >= LOGGED[j]) | (j == k - 1)))
    value_revealed = np.zeros((n, k), dtype=bool)
    value_revealed[chosen >= 0, chosen[chosen >= 0]] = True
    propensity = np.where(rng.uniform(size=n) < 0.5, 0.2, 0.4)
    explored = rng.uniform(size=n) < propensity
    seen = revealed | explored[:, None]
    valued = value_revealed | explored[:, None]
    return op.OffPolicyLog(
        state=np.where(seen, state, op.MISSING),
        score=np.where(seen, score, np.nan),
        cost=np.where(seen, cost, 0.0),
        value=np.where(valued, value, np.nan),
        revealed=revealed,
        value_revealed=value_revealed,
        explored=explored,
        propensity=propensity,
        stratum=stratum,
    )


def proposal(log: op.OffPolicyLog) -> op.Rules:
    """Tier 1 kept only from g ≥ 0.8, and intent 2 routed past tier 1 altogether."""
    return op.rules_for(log, [0.8, 0.0], {2: ([1.0, 0.0], [True, False])})


def test_replay_walks_the_cascade_and_says_when_the_log_does_not_settle_it() -> None:
    log = op.OffPolicyLog(
        state=np.array([[op.ANSWERED, op.ANSWERED], [op.FAILED, op.ANSWERED], [op.ANSWERED, 0]]),
        score=np.array([[0.6, 0.9], [np.nan, 0.7], [0.4, np.nan]]),
        cost=np.array([[0.001, 0.02], [0.0, 0.02], [0.001, 0.0]]),
        value=np.array([[0.5, 0.83], [np.nan, -0.08], [0.83, np.nan]]),
        revealed=np.ones((3, 2), dtype=bool),
        value_revealed=np.ones((3, 2), dtype=bool),
        explored=np.zeros(3, dtype=bool),
        propensity=np.ones(3),
        stratum=np.array([1, 1, 2]),
    )
    y, settled = op.replay(log, op.rules_for(log, [0.5, 0.0]))
    # Draft 1 kept at tier 1 (0.6 ≥ 0.5); draft 2: tier 1 failed, tier 2 kept; draft 3: tier 1
    # escalated to a tier never asked, so the log cannot say.
    assert y[0] == pytest.approx(0.5 - 0.001)
    assert y[1] == pytest.approx(-0.08 - 0.02)
    assert not settled[2] and np.isnan(y[2])
    # Intent 1 routed past tier 1: tier 2's answer and cost only.
    y, settled = op.replay(log, op.rules_for(log, [0.5, 0.0], {1: ([0.5, 0.0], [True, False])}))
    assert y[0] == pytest.approx(0.83 - 0.02)
    # Routing past every tier routes past none.
    y, _ = op.replay(log, op.rules_for(log, [0.5, 0.0], {1: ([0.5, 0.0], [True, True])}))
    assert y[0] == pytest.approx(0.5 - 0.001)


def test_ips_and_dr_are_unbiased_over_many_logs_with_known_propensities() -> None:
    """300 seeded logs of 400 drafts: the mean error of IPS and DR against each log's true ENCS
    per message under the proposal is within three standard errors of zero, and DR, whose model
    is exact where the log settles a draft, is at least twice as precise as IPS."""
    rng = np.random.default_rng(18)
    errors: dict[str, list[float]] = {"ips": [], "dr": []}
    for _ in range(300):
        pop = population(rng)
        truth = float(np.mean(op.replay(complete_log(pop), proposal(complete_log(pop)))[0]))
        log = logged(rng, pop)
        estimates = op.estimate(log, proposal(log), bootstrap=0)
        assert estimates.ips is not None and estimates.dr is not None
        errors["ips"].append(estimates.ips.value - truth)
        errors["dr"].append(estimates.dr.value - truth)
    for name, values in errors.items():
        mean, se = np.mean(values), np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(mean) < 3 * se + 1e-3, (name, mean, se)
    assert np.std(errors["dr"]) * 2 < np.std(errors["ips"])


def test_the_95_percent_intervals_cover_the_expected_encs_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    big = population(rng, n=200_000)
    truth = float(np.mean(op.replay(complete_log(big), proposal(complete_log(big)))[0]))
    covered = {"ips": 0, "dr": 0}
    runs = 300
    for _ in range(runs):
        log = logged(rng, population(rng))
        estimates = op.estimate(log, proposal(log), bootstrap=0)
        for name, found in (("ips", estimates.ips), ("dr", estimates.dr)):
            assert found is not None
            covered[name] += found.low <= truth <= found.high
    for name, count in covered.items():
        assert 0.89 <= count / runs <= 0.99, (name, count / runs)


def test_direct_method_has_a_bootstrap_interval_and_a_proposal_equal_to_the_policy_differs_by_zero() -> (
    None
):
    rng = np.random.default_rng(3)
    log = logged(rng, population(rng))
    now = op.rules_for(log, list(LOGGED))
    estimates = op.estimate(log, now, bootstrap=200, seed=1)
    assert estimates.direct is not None
    assert estimates.direct.low <= estimates.direct.value <= estimates.direct.high
    compared = op.compare(log, now, now)
    assert compared.dr_difference is not None
    assert compared.dr_difference.value == 0 == compared.dr_difference.half_width


def test_no_explored_draft_no_estimate() -> None:
    rng = np.random.default_rng(5)
    log = logged(rng, population(rng, n=50))
    log.explored[:] = False
    estimates = op.estimate(log, proposal(log), bootstrap=0)
    assert estimates.ips is None and estimates.dr is None and estimates.n_explored == 0


# --- The propensity recorded by exploration ------------------------------------------------------

CHEAP = "Thanks for writing! Your refund was issued today and arrives in 3-5 days."
STRONG = "Thanks for reaching out! I issued your refund today; it arrives within 5 business days."


def test_an_explored_draft_records_the_probability_it_was_drawn_with(
    db: None, django_capture_on_commit_callbacks: Callable[..., Any], monkeypatch: Any
) -> None:
    monkeypatch.setattr(drafting, "_enqueue_explore", lambda draft_id: None)
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG))) as strong,
    ):
        setup = two_tier_team(
            "Propensity",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(strong.base_url),
            threshold="0.5",
        )
        setup.policy.explore_share = Decimal("0.25")
        setup.policy.save()
        drawn = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        missed = ingest(setup, "c2", "c2-m1", "Where is my refund?").draft
        assert drawn is not None and missed is not None
        with django_capture_on_commit_callbacks(execute=True):
            drafting.draft_generate(draft_id=drawn.pk, explore_draw=lambda: 0.2)
            drafting.draft_generate(draft_id=missed.pk, explore_draw=lambda: 0.3)
        # The share changes before exploration runs: the draw's probability is what counts.
        setup.policy.explore_share = Decimal("0.5")
        setup.policy.save()
        assert drafting.draft_explore(draft_id=drawn.pk) == 1
    attempts = list(DraftAttempt.objects.filter(draft=drawn).order_by("tier"))
    assert [(a.tier, a.exploratory, a.propensity) for a in attempts] == [
        (1, False, Decimal("0.2500")),
        (2, True, Decimal("0.2500")),
    ]
    assert [a.propensity for a in DraftAttempt.objects.filter(draft=missed)] == [None]


# --- The policy's log and the tuning page --------------------------------------------------------

GOOD = "Your refund was issued today and should reach your card within five working days."
WRONG = "Please restart the router and tell us which lights are blinking on the front panel."
CHEAP_USD, DEAR_USD = Decimal("0.0001"), Decimal("0.0100")


def _policy() -> CascadePolicy:
    team = TeamFactory.create()
    policy = PolicyFactory.create(team=team, explore_share=Decimal("0.5"))
    TierFactory.create(
        policy=policy,
        position=1,
        endpoint=EndpointFactory.create(name="small"),
        threshold=Decimal("0.3000"),
    )
    TierFactory.create(
        policy=policy,
        position=2,
        endpoint=EndpointFactory.create(name="large"),
        threshold=Decimal("0.5000"),
    )
    return policy


def _logged(policy: CascadePolicy, *, n: int, explored_every: int = 2) -> None:
    """`n` drafts whose tier 1 is right exactly when its score is ≥ 0.70 (scores 0.30 … 0.99);
    every `explored_every`-th was drawn (propensity 0.5) and has tier 2's answer too (right)."""
    tiers = list(policy.tiers.select_related("endpoint").order_by("position"))
    agent = UserFactory.create()
    for i in range(n):
        score = Decimal(f"{0.30 + 0.69 * i / max(n - 1, 1):.4f}")
        good = score >= Decimal("0.70")
        explored = i % explored_every == 0
        draft = DraftFactory.create(
            policy=policy,
            message__conversation__channel__team=policy.team,
            status="ready",
            ready_at=EARLY,
            text=GOOD if good else WRONG,
            score=score,
        )
        propensity = Decimal("0.5") if explored else None
        DraftAttemptFactory.create(
            draft=draft,
            tier=1,
            endpoint=tiers[0].endpoint,
            score=score,
            cost=CHEAP_USD,
            text=(GOOD if good else WRONG) if explored else "",
            propensity=propensity,
        )
        if explored:
            DraftAttemptFactory.create(
                draft=draft,
                tier=2,
                endpoint=tiers[1].endpoint,
                score=Decimal("0.9000"),
                cost=DEAR_USD,
                text=GOOD,
                exploratory=True,
                propensity=propensity,
            )
        AgentActionFactory.create(
            draft=draft,
            agent=agent,
            kind="use" if good else "ignore",
            final_text=GOOD,
            edit_distance=Decimal("0") if good else Decimal("0.8"),
        )


def test_policy_log_reads_the_drafts_the_values_and_the_propensities(db: None) -> None:
    policy = _policy()
    _logged(policy, n=20)
    ActionValues.objects.create(
        team=policy.team,
        s_use=Decimal("1.0"),
        s_edit=Decimal("0.4"),
        s_ignore=Decimal("-0.1"),
        wait_per_second=Decimal("0.01"),
        n_actions=100,
    )
    found = op.policy_log(policy)
    log = found.log
    assert found.values.measured and log.n == 20
    assert int(log.explored.sum()) == 10 and set(log.propensity[log.explored]) == {0.5}
    # Tier 1's answer was what the agent saw: its value is the action's, known without exploring.
    assert log.value_revealed[:, 0].all() and not log.value_revealed[:, 1].any()
    assert set(log.value[:, 0]) == {1.0, -0.1}
    # Tier 2's answers came from exploration only; each was the agent's reply word for word.
    assert (log.state[log.explored, 1] == op.ANSWERED).all()
    assert (log.value[log.explored, 1] == 1.0).all() and not log.revealed[:, 1].any()
    assert (log.state[~log.explored, 1] == op.MISSING).all()


def test_a_proposal_that_escalates_bad_tier_one_drafts_is_estimated_to_earn_more(
    db: None,
) -> None:
    policy = _policy()
    _logged(policy, n=60)
    tier1 = policy.tiers.get(position=1)
    estimate = op.proposal_estimate(policy, thresholds={tier1.pk: Decimal("0.7")}, bootstrap=100)
    assert estimate.ok, estimate.reason
    comparison = estimate.comparison
    assert comparison is not None and comparison.dr_difference is not None
    assert comparison.proposed.dr is not None and comparison.current.dr is not None
    # In force: tier 1 keeps every draft, right for scores ≥ 0.70 only (defaults: ignore costs).
    assert comparison.current.dr.value < comparison.proposed.dr.value
    assert comparison.dr_difference.low > 0
    assert not estimate.values.measured  # the documented defaults
    assert estimate.n_drafts == 60 and estimate.n_explored == 30


@pytest.mark.slow
def test_the_tuning_page_shows_the_estimate_before_apply(client: Client, db: None) -> None:
    policy = _policy()
    _logged(policy, n=60, explored_every=1)
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    page = client.get(
        reverse("admin:drafting_cascadepolicy_tuning", args=[policy.pk]),
        {"objective": "encs", "value_usd": "0.50"},
    )
    assert page.status_code == 200
    body = page.content.decode()
    assert "Off-policy estimate of the proposal" in body
    assert "Doubly robust" in body and "Inverse propensity" in body and "Direct method" in body
    assert "60 explored" in body
    estimate = page.context["offpolicy"]
    assert estimate.ok
    assert body.index("Off-policy estimate") < body.index("Apply these thresholds")
