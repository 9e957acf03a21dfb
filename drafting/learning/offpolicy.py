"""Off-policy estimates: what a proposed threshold (and per-intent routing) set would have earned
in ENCS per message, from the drafts already logged, before it is applied (issue 18, build 6).

The log is a contextual bandit with partial feedback. Every cascade-drafted, acted-on draft
shows what the policy in force did: the tiers it asked (score, cost) and the value of the draft
the agent saw (their action). A random share of drafts — the exploration sample, each drawn with
a recorded probability, `DraftAttempt.propensity` — also shows every other tier's answer, each
labelled against what the agent sent. Under a proposed set a draft's ENCS is

    y = value(the draft kept) − cost(every tier asked),

value being S_use / S_edit / S_ignore (ActionValues, measured per team; documented defaults
otherwise) of the action the draft got or, for a tier the agent never saw, the action its
answer would have been labelled with (`label_value`).

Three estimators of the mean of y over all logged drafts, each with a 95 % interval:
- direct method (DM): per draft, y itself when the logged cascade alone settles it (the
  proposal asks only tiers the cascade asked and keeps an answer whose value is known), else
  the mean y of explored drafts in the same cell (intent × "not settled by the log"), the draft
  itself left out; interval by bootstrap over drafts;
- inverse propensity (IPS): mean of explored·y/propensity over all drafts: unbiased whatever
  the drafts are, as long as the propensities are the probabilities the sample was drawn with;
- doubly robust (DR): DM plus the explored drafts' residuals weighted by 1/propensity: unbiased
  like IPS, with the variance of DM where the model is good (a draft the log settles has a zero
  residual). IPS and DR intervals are sandwich (normal) intervals of their per-draft terms.

Pure numpy here (replay, estimators); `policy_log` reads the log from the database and
`proposal_estimate` compares a proposal with the policy in force on it, by the same estimator.

Known bias, said on the page: a tier's score g can depend on the earlier tiers' drafts (the
scorer sees them); a proposal that routes past a tier reuses the score given after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import numpy.typing as npt
from django.conf import settings

from drafting.engine.edits import edit_distance, is_good_edit
from drafting.learning.shadowed import shadow_only_drafts
from drafting.learning.tuning import TierColumn, policy_tier_columns
from drafting.models import (
    MONEY_PLACES,
    ActionValues,
    AgentAction,
    CascadePolicy,
    DraftAttempt,
    IntentRule,
    MessageIntent,
)

Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# A tier's cell in the log: never asked for this draft (or routed past), asked and failed (no
# draft, its cost paid), asked and answered.
MISSING, FAILED, ANSWERED = 0, 1, 2
NO_STRATUM = -1
Z95 = 1.959963984540054
# An intent's cell of the direct method needs this many explored drafts, else the model falls
# back to every intent's.
MIN_CELL = 5
BOOTSTRAP_SAMPLES = 400
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)

# What an action on a draft is worth (USD per draft) when the team has no measured
# ActionValues yet: an agent at $30/hour who writes a reply unaided in 120 s, sends a draft as
# is in 20 s (S_use = 100 s), edits one in 60 s (S_edit = 60 s) and reads a useless one for 10 s
# before writing their own (S_ignore = −10 s). Only a fallback: accounting measures the team's.
DEFAULT_S_USE = Decimal("0.8333")
DEFAULT_S_EDIT = Decimal("0.5000")
DEFAULT_S_IGNORE = Decimal("-0.0833")


# --- The log ------------------------------------------------------------------------------------


@dataclass
class OffPolicyLog:
    """Drafts × tiers (policy order). `state`, `score`, `cost`, `value` are what is known of each
    tier's answer, exploration included; `revealed` marks the cells the cascade itself asked
    (exploration asked the rest) and `value_revealed` the values known without exploration (the
    draft the agent saw). `explored` drafts were in the exploration sample, drawn with
    `propensity`; `stratum` is the message's intent (NO_STRATUM: none confident)."""

    state: IntArray
    score: Array
    cost: Array
    value: Array
    revealed: BoolArray
    value_revealed: BoolArray
    explored: BoolArray
    propensity: Array
    stratum: IntArray

    def __post_init__(self) -> None:
        n, k = self.state.shape
        for name in ("score", "cost", "value", "revealed", "value_revealed"):
            if getattr(self, name).shape != (n, k):
                raise ValueError(f"{name} must be {(n, k)}")
        for name in ("explored", "propensity", "stratum"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be {(n,)}")
        if np.any(self.explored & ~((self.propensity > 0) & (self.propensity <= 1))):
            raise ValueError("An explored draft needs a propensity in (0, 1].")

    @property
    def n(self) -> int:
        return int(self.state.shape[0])

    @property
    def k(self) -> int:
        return int(self.state.shape[1])

    def logged_view(self) -> OffPolicyLog:
        """What the log would hold had no draft been explored: exploration's cells missing, and
        only the values of the drafts agents saw."""
        return OffPolicyLog(
            state=np.where(self.revealed, self.state, MISSING),
            score=np.where(self.revealed, self.score, np.nan),
            cost=np.where(self.revealed, self.cost, 0.0),
            value=np.where(self.value_revealed, self.value, np.nan),
            revealed=self.revealed,
            value_revealed=self.value_revealed,
            explored=np.zeros(self.n, dtype=bool),
            propensity=self.propensity,
            stratum=self.stratum,
        )

    def rows(self, index: npt.ArrayLike) -> OffPolicyLog:
        idx = np.asarray(index)
        return OffPolicyLog(
            state=self.state[idx],
            score=self.score[idx],
            cost=self.cost[idx],
            value=self.value[idx],
            revealed=self.revealed[idx],
            value_revealed=self.value_revealed[idx],
            explored=self.explored[idx],
            propensity=self.propensity[idx],
            stratum=self.stratum[idx],
        )


@dataclass(frozen=True)
class Rules:
    """What a threshold/routing set does to each draft of a log: per draft and tier the
    threshold (keep the answer when g ≥ it) and whether the tier is routed past."""

    thresholds: Array  # (n, k)
    skip: BoolArray  # (n, k)


def rules_for(
    log: OffPolicyLog,
    thresholds: Sequence[float],
    by_stratum: Mapping[int, tuple[Sequence[float], Sequence[bool]]] | None = None,
) -> Rules:
    """The policy's `thresholds` for every draft, replaced by an intent's own (thresholds,
    skips) for drafts of that intent (the intent rules in force or proposed)."""
    n, k = log.n, log.k
    if len(thresholds) != k:
        raise ValueError(f"{len(thresholds)} thresholds for {k} tiers")
    table = np.tile(np.asarray(thresholds, dtype=np.float64), (n, 1))
    skip = np.zeros((n, k), dtype=bool)
    for stratum, (own, routed) in (by_stratum or {}).items():
        rows = log.stratum == stratum
        table[rows] = np.asarray(own, dtype=np.float64)
        skip[rows] = np.asarray(routed, dtype=bool)
    return Rules(thresholds=table, skip=skip)


def replay(log: OffPolicyLog, rules: Rules) -> tuple[Array, BoolArray]:
    """Per draft, the ENCS the rules would have earned and whether the log settles it.

    Walks the tiers as the cascade does (drafting.engine.cascade): a routed tier is not asked
    (every tier routed: none is); a failed tier's cost is paid and the next asked; an answer is
    paid and kept, and stops the walk when its score reaches the threshold or it is the last
    tier asked; with no answer the message has no draft (value 0). A draft whose walk reaches a
    missing cell, or keeps an answer of unknown value, is not settled (y is NaN)."""
    n, k = log.n, log.k
    skip = rules.skip & ~rules.skip.all(axis=1, keepdims=True)
    asked = ~skip
    # The last tier each draft would ask: its answer is kept whatever its score.
    last = k - 1 - np.argmax(asked[:, ::-1], axis=1)
    open_ = np.ones(n, dtype=bool)
    settled = np.ones(n, dtype=bool)
    kept = np.zeros(n)
    cost = np.zeros(n)
    for j in range(k):
        here = open_ & asked[:, j]
        missing = here & (log.state[:, j] == MISSING)
        settled &= ~missing
        open_ &= ~missing
        here &= ~missing
        cost[here] += log.cost[here, j]
        answered = here & (log.state[:, j] == ANSWERED)
        kept[answered] = log.value[answered, j]
        stop = answered & ((log.score[:, j] >= rules.thresholds[:, j]) | (last == j))
        open_ &= ~stop
    settled &= ~np.isnan(kept)
    y = np.where(settled, kept - cost, np.nan)
    return y, settled


# --- Estimators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    value: float  # ENCS per message, USD
    low: float  # 95 % interval
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass
class Estimates:
    """The three estimators of ENCS per message under one rule set, on one log."""

    n: int
    n_explored: int
    n_settled: int  # drafts the logged cascade alone settles (their y is known exactly)
    direct: Estimate | None
    ips: Estimate | None
    dr: Estimate | None
    terms_ips: Array = field(repr=False, default_factory=lambda: np.zeros(0))
    terms_dr: Array = field(repr=False, default_factory=lambda: np.zeros(0))


def _normal(terms: Array, z: float = Z95) -> Estimate:
    mean = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else float("inf")
    return Estimate(mean, mean - z * se, mean + z * se)


def _direct(
    log: OffPolicyLog, y_full: Array, explored: BoolArray, y_logged: Array
) -> tuple[Array, BoolArray]:
    """m̂ per draft, never using the draft's own exploration (a donor leaves itself out): y
    where the logged cascade settles it (`y_logged` not NaN), else the mean y of the other
    explored drafts of its cell (its intent, among drafts the log does not settle) when the cell
    has MIN_CELL of them, else of every unsettled explored draft. The second array says where
    m̂ exists (NaN: no donor at all)."""
    m = np.full(log.n, np.nan)
    unsettled = np.isnan(y_logged)
    m[~unsettled] = y_logged[~unsettled]
    donors = explored & unsettled
    y = np.where(donors, y_full, 0.0)
    own_count = donors.astype(np.float64)
    total_all, count_all = float(y.sum()), float(donors.sum())
    for cell in np.unique(log.stratum[unsettled]):
        members = unsettled & (log.stratum == cell)
        in_cell = donors & (log.stratum == cell)
        cell_count = float(in_cell.sum()) - own_count[members]
        all_count = count_all - own_count[members]
        with np.errstate(invalid="ignore", divide="ignore"):
            from_cell = (float(y[in_cell].sum()) - y[members]) / cell_count
            from_all = (total_all - y[members]) / all_count
        use_cell = (cell != NO_STRATUM) & (cell_count >= MIN_CELL)
        m[members] = np.where(use_cell, from_cell, np.where(all_count > 0, from_all, np.nan))
    return m, ~np.isnan(m)


def estimate(
    log: OffPolicyLog, rules: Rules, *, bootstrap: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Estimates:
    """DM, IPS and DR estimates of ENCS per message under `rules` (see the module docstring).

    An explored draft whose exploration did not finish (a tier never asked) is counted as not
    explored: its y is unknown; the few such drafts bias IPS down by their share."""
    y_full, settled_full = replay(log, rules)
    y_logged, _ = replay(log.logged_view(), rules)
    explored = log.explored & settled_full
    n = log.n
    result = Estimates(
        n=n,
        n_explored=int(explored.sum()),
        n_settled=int((~np.isnan(y_logged)).sum()),
        direct=None,
        ips=None,
        dr=None,
    )
    if n < 2 or not explored.any():
        return result
    weight = np.where(explored, 1.0 / log.propensity, 0.0)
    y0 = np.nan_to_num(y_full)
    result.terms_ips = weight * y0
    result.ips = _normal(result.terms_ips)
    m, modelled = _direct(log, y_full, explored, y_logged)
    if modelled.all():
        result.terms_dr = m + weight * (y0 - m)
        result.dr = _normal(result.terms_dr)
        # DM's interval: the model refitted on bootstrap samples of the drafts (its own
        # uncertainty included); NaN when no bootstrap was asked for.
        rng = np.random.default_rng(seed)
        means: list[float] = []
        for _ in range(bootstrap):
            idx = rng.integers(0, n, n)
            sample = log.rows(idx)
            m_b, ok = _direct(sample, y_full[idx], explored[idx], y_logged[idx])
            if ok.all():
                means.append(float(m_b.mean()))
        low, high = np.quantile(means, [0.025, 0.975]) if means else (np.nan, np.nan)
        result.direct = Estimate(float(m.mean()), float(low), float(high))
    return result


@dataclass
class Comparison:
    """A proposal against the policy in force, on the same drafts, by the same estimators; the
    difference (proposed − current) by DR and IPS, with paired intervals."""

    proposed: Estimates
    current: Estimates
    dr_difference: Estimate | None
    ips_difference: Estimate | None

    @property
    def n(self) -> int:
        return self.proposed.n

    @property
    def n_explored(self) -> int:
        return self.proposed.n_explored


def compare(log: OffPolicyLog, proposed: Rules, current: Rules) -> Comparison:
    new, now = estimate(log, proposed), estimate(log, current)
    dr = _normal(new.terms_dr - now.terms_dr) if new.dr is not None and now.dr is not None else None
    ips = (
        _normal(new.terms_ips - now.terms_ips)
        if new.ips is not None and now.ips is not None
        else None
    )
    return Comparison(proposed=new, current=now, dr_difference=dr, ips_difference=ips)


# --- The policy's log, from the database --------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """USD per draft of each action (ActionValues), and whether they are measured."""

    s_use: Decimal
    s_edit: Decimal
    s_ignore: Decimal
    measured: bool

    def of(self, kind: str) -> float:
        return float(
            {AgentAction.Kind.USE: self.s_use, AgentAction.Kind.EDIT: self.s_edit}.get(
                AgentAction.Kind(kind), self.s_ignore
            )
        )


def action_values(*, team_id: int) -> Values:
    found = ActionValues.objects.filter(team_id=team_id).first()
    if found is None:
        return Values(DEFAULT_S_USE, DEFAULT_S_EDIT, DEFAULT_S_IGNORE, measured=False)
    return Values(found.s_use, found.s_edit, found.s_ignore, measured=True)


def label_value(answer: str, final_text: str, values: Values) -> float:
    """What a tier's answer the agent never saw would have been worth: used when the agent sent
    it word for word, edited when within the good-edit distance (drafting.engine.edits),
    ignored otherwise."""
    distance = edit_distance(answer, final_text)
    if distance == 0:
        return values.of(AgentAction.Kind.USE)
    return values.of(AgentAction.Kind.EDIT if is_good_edit(distance) else AgentAction.Kind.IGNORE)


@dataclass
class PolicyLog:
    log: OffPolicyLog
    tiers: list[TierColumn]
    values: Values
    unknown_propensity: int  # explored drafts from before propensities were recorded


def policy_log(policy: CascadePolicy) -> PolicyLog:
    """The policy's cascade-drafted, acted-on drafts as an OffPolicyLog (three queries).

    Steps: the enabled tiers (columns, matched by position and endpoint as the tuning table
    does); the drafts' actions and confident intents; their attempts in order (a retried tier's
    later attempt wins; a routed one is "not asked"; drafts with a cache hit or macro offer are
    left out: no threshold decides them). The draft the agent saw is the cascade's last answer;
    its value is the action's, the others' their label's. A draft was explored when an attempt
    carries a propensity (older explored drafts: the policy's explore share now)."""
    columns = policy_tier_columns(policy)
    values = action_values(team_id=policy.team_id)
    k = len(columns)
    slot = {(c.position, c.endpoint_id): i for i, c in enumerate(columns)}
    actions = {
        draft_id: (kind, final_text, message_id)
        for draft_id, kind, final_text, message_id in AgentAction.objects.filter(
            draft__policy=policy,
            kind__in=(AgentAction.Kind.USE, AgentAction.Kind.EDIT, AgentAction.Kind.IGNORE),
        ).values_list("draft_id", "kind", "final_text", "inbound_message_id")
    }
    intents = dict(
        MessageIntent.objects.filter(
            message_id__in=[message_id for _, _, message_id in actions.values()],
            confidence__gte=Decimal(str(settings.MACRO_MIN_INTENT_CONFIDENCE)),
        ).values_list("message_id", "intent_id")
    )
    attempts = (
        DraftAttempt.objects.filter(draft_id__in=list(actions), purpose=DraftAttempt.Purpose.DRAFT)
        .order_by("draft_id", "started_at", "id")
        .values_list(
            "draft_id",
            "tier",
            "endpoint_id",
            "outcome",
            "error_kind",
            "score",
            "cost",
            "text",
            "exploratory",
            "propensity",
            "cache_hit",
            "macro_id",
        )
    )
    rows: dict[int, dict[int, tuple[int, float, float, str, bool]]] = {}
    drawn: dict[int, float | None] = {}
    skipped: set[int] = set()
    for (
        draft_id,
        tier,
        endpoint_id,
        outcome,
        error_kind,
        score,
        cost,
        text,
        exploratory,
        propensity,
        cache_hit,
        macro_id,
    ) in attempts:
        if cache_hit or macro_id is not None:
            skipped.add(draft_id)
            continue
        if propensity is not None:
            drawn[draft_id] = float(propensity)
        elif exploratory:
            drawn.setdefault(draft_id, None)
        i = slot.get((tier, endpoint_id))
        if i is None or error_kind == DraftAttempt.ErrorKind.ROUTED:
            continue
        ok = outcome == DraftAttempt.Outcome.OK
        rows.setdefault(draft_id, {})[i] = (
            ANSWERED if ok else FAILED,
            float(score) if score is not None else 0.0,
            float(cost),
            text,
            bool(exploratory),
        )
    ids = [d for d in rows if d not in skipped]
    n = len(ids)
    log = OffPolicyLog(
        state=np.zeros((n, k), dtype=np.int64),
        score=np.full((n, k), np.nan),
        cost=np.zeros((n, k)),
        value=np.full((n, k), np.nan),
        revealed=np.zeros((n, k), dtype=bool),
        value_revealed=np.zeros((n, k), dtype=bool),
        explored=np.zeros(n, dtype=bool),
        propensity=np.ones(n),
        stratum=np.full(n, NO_STRATUM, dtype=np.int64),
    )
    unknown = 0
    share = float(policy.explore_share)
    shadowed = shadow_only_drafts(ids)  # texts kept for a shadow answer: not explored
    for r, draft_id in enumerate(ids):
        kind, final_text, message_id = actions[draft_id]
        log.stratum[r] = intents.get(message_id, NO_STRATUM)
        cells = rows[draft_id]
        shown = max(
            (i for i, cell in cells.items() if cell[0] == ANSWERED and not cell[4]), default=None
        )
        for i, (state, g, paid, text, by_exploration) in cells.items():
            log.state[r, i], log.cost[r, i], log.revealed[r, i] = state, paid, not by_exploration
            if state == ANSWERED:
                log.score[r, i] = g
                if i == shown:
                    log.value[r, i], log.value_revealed[r, i] = values.of(kind), True
                elif text and draft_id not in shadowed:
                    log.value[r, i] = label_value(text, final_text, values)
        if draft_id in drawn:
            p = drawn[draft_id]
            if p is None:
                unknown += 1
                p = share
            if p > 0:
                log.explored[r], log.propensity[r] = True, p
    return PolicyLog(log=log, tiers=columns, values=values, unknown_propensity=unknown)


# --- A proposal against the policy in force -----------------------------------------------------


@dataclass(frozen=True)
class IntentSetting:
    """One intent's rules over the policy's tiers (position order)."""

    thresholds: tuple[float, ...]
    skip: tuple[bool, ...]


def rules_in_force(policy: CascadePolicy, tiers: Sequence[TierColumn]) -> dict[int, IntentSetting]:
    """The intent rules the cascade applies now (those with enough labels), per intent; a tier
    without a rule keeps the policy's threshold and is asked."""
    index = {c.tier_id: i for i, c in enumerate(tiers)}
    found: dict[int, tuple[list[float], list[bool]]] = {}
    for rule in IntentRule.objects.filter(
        tier_id__in=list(index), n_labels__gte=policy.intent_min_labels
    ):
        thresholds, skips = found.setdefault(
            rule.intent_id, ([float(c.threshold) for c in tiers], [False] * len(tiers))
        )
        thresholds[index[rule.tier_id]] = float(rule.threshold)
        skips[index[rule.tier_id]] = rule.skip
    return {
        intent: IntentSetting(tuple(thresholds), tuple(skips))
        for intent, (thresholds, skips) in found.items()
    }


def _rules(
    log: OffPolicyLog, thresholds: Sequence[float], intents: Mapping[int, IntentSetting]
) -> Rules:
    return rules_for(log, thresholds, {i: (s.thresholds, s.skip) for i, s in intents.items()})


@dataclass
class ProposalEstimate:
    comparison: Comparison | None
    n_drafts: int
    n_explored: int
    unknown_propensity: int
    values: Values
    reason: str = ""  # why there is no estimate

    @property
    def ok(self) -> bool:
        return self.comparison is not None and self.comparison.proposed.dr is not None


def money(amount: float | None) -> Decimal | None:
    if amount is None or not np.isfinite(amount):
        return None
    return Decimal(repr(amount)).quantize(MONEY_QUANTUM)


def proposal_estimate(
    policy: CascadePolicy,
    *,
    thresholds: Mapping[int, Decimal] | None = None,
    intent: int | None = None,
    intent_setting: Mapping[int, tuple[Decimal, bool]] | None = None,
    bootstrap: int = BOOTSTRAP_SAMPLES,
    log: PolicyLog | None = None,
) -> ProposalEstimate:
    """ENCS per message of a proposal and of the policy in force, on the policy's log.

    A proposal is new thresholds for the policy's tiers (tier id → threshold: the policy-wide
    proposal; the intent rules in force still apply) or one intent's new rules (`intent`,
    tier id → (threshold, skip)); tiers not named keep what is in force."""
    found = log or policy_log(policy)
    tiers = found.tiers
    estimate_ = ProposalEstimate(
        comparison=None,
        n_drafts=found.log.n,
        n_explored=int(found.log.explored.sum()),
        unknown_propensity=found.unknown_propensity,
        values=found.values,
    )
    if len(tiers) < 2:
        estimate_.reason = "The policy has fewer than two enabled tiers."
        return estimate_
    if not found.log.explored.any():
        estimate_.reason = (
            "No explored draft with an agent's reply yet: exploration's answers are what an "
            "estimate of another threshold set is made of."
        )
        return estimate_
    current_thresholds = [float(c.threshold) for c in tiers]
    in_force = rules_in_force(policy, tiers)
    new_thresholds = [float((thresholds or {}).get(c.tier_id, c.threshold)) for c in tiers]
    new_intents = dict(in_force)
    if intent is not None:
        base = in_force.get(intent, IntentSetting(tuple(current_thresholds), (False,) * len(tiers)))
        chosen = intent_setting or {}
        new_intents[intent] = IntentSetting(
            tuple(
                float(chosen[c.tier_id][0]) if c.tier_id in chosen else base.thresholds[i]
                for i, c in enumerate(tiers)
            ),
            tuple(
                bool(chosen[c.tier_id][1]) if c.tier_id in chosen else base.skip[i]
                for i, c in enumerate(tiers)
            ),
        )
    log_ = found.log
    new, now = (
        _rules(log_, new_thresholds, new_intents),
        _rules(log_, current_thresholds, in_force),
    )
    estimate_.comparison = Comparison(
        proposed=estimate(log_, new, bootstrap=bootstrap),
        current=estimate(log_, now, bootstrap=bootstrap),
        dr_difference=None,
        ips_difference=None,
    )
    comparison = estimate_.comparison
    if comparison.proposed.dr is not None and comparison.current.dr is not None:
        comparison.dr_difference = _normal(
            comparison.proposed.terms_dr - comparison.current.terms_dr
        )
    if comparison.proposed.ips is not None and comparison.current.ips is not None:
        comparison.ips_difference = _normal(
            comparison.proposed.terms_ips - comparison.current.terms_ips
        )
    if not estimate_.ok:
        estimate_.reason = "Too few explored drafts for an estimate."
    return estimate_
