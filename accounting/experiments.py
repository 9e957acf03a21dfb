"""A policy experiment's results: per arm ENCS per message, P(use), P(ignore), model cost and
the agent's wait with 95 % confidence intervals, each arm against the first (the control), and
an always-valid sequential test of the ENCS-per-message difference that may be looked at as
often as one likes.

What is counted. An arm's messages are its drafted messages: the drafts whose `experiment_arm`
is the arm, held-out conversations left out (they are the T_baseline sample, no draft was
shown; they are counted apart). A draft's ENCS is the dashboard's, from the same facts
(accounting.facts.facts_of) and the same pricing (accounting.engine): R × (T_baseline − handle
seconds) / 3600 for a draft used, edited or ignored, 0 for one failed, never answered or an
outlier, minus what its attempts cost; T_baseline is the team's over the experiment's days
(accounting.knowledge.scope_baselines, as `encs_figures` measures it) and is taken as known
(its own interval is on the dashboard; it moves every arm alike, and a difference of arms only
through their different numbers of answered drafts). The agent's wait is max(0, ready_at −
first_shown_at) over the arm's drafts that were both shown and ready.

Intervals (fixed horizon, 95 %). A mean: x̄ ± 1.96·s/√n (the central limit theorem: an arm of
an experiment worth reading has hundreds of messages). A share: Wilson's score interval (right
at 0 or 1, where ± 1.96·√(p(1−p)/n) collapses). A difference of two arms' means or shares:
Welch's, Δ̂ ± 1.96·√(s²_a/n_a + s²_b/n_b) (unequal variances and sizes).

The sequential test: a normal-mixture confidence sequence for the difference of ENCS per
message (Robbins' mixture as in Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", the two-sided normal-mixture boundary;
it is Johari, Pekelis & Walsh's mSPRT, 2017, with mixing variance τ²). With V = s²_a/n_a +
s²_b/n_b the plug-in variance of Δ̂ (Waudby-Smith et al. 2024, asymptotic confidence
sequences, justify the plug-in), the mixture likelihood ratio against "no difference" is

    Λ = √(V/(V+τ²)) · exp(τ²·Δ̂² / (2·V·(V+τ²)))

and {Δ : Λ(Δ) < 1/α} = Δ̂ ± √(V(V+τ²)/τ² · (2·ln(1/α) + ln((V+τ²)/V))). By Ville's inequality
the interval holds at every look at once with probability ≥ 1 − α, so looking after every
batch does not inflate the false-positive rate; the running intersection of the looks'
intervals is reported (it only narrows), and the always-valid p-value is min over looks of
1/Λ. "Significant" = the always-valid interval excludes 0.
Tuning: α = 0.05; τ² = 7.94 × V at REFERENCE_MESSAGES messages of the two arms (V scaled
from the current one by n/REFERENCE_MESSAGES), which makes the boundary tightest there
(Howard et al.'s ρ = v/(2 ln(1/α) + ln(1 + 2 ln(1/α))), 7.94 at α = 0.05); looks after each
LOOK_EVERY messages of the pair, from LOOK_FROM messages in each arm on (before that a plug-in
variance is too rough to trust).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from django.utils import timezone

from accounting.engine import EXACT, SettingsBook, _saving_x3600, money, totals
from accounting.facts import Fact, Scope, facts_of
from accounting.figures import SECONDS, SHARE, Baseline
from accounting.knowledge import scope_baselines
from drafting.models import AgentAction, Draft, Experiment, ExperimentArm

Z95 = Decimal("1.959963984540054")  # the standard normal's 97.5 % quantile
ALPHA = Decimal("0.05")
# The mixture's variance, as a multiple of Var(Δ̂) at REFERENCE_MESSAGES: 2·ln(1/α) +
# ln(1 + 2·ln(1/α)) at α = 0.05.
LOG_INVERSE_ALPHA = (1 / ALPHA).ln()
MIXTURE_FACTOR = 2 * LOG_INVERSE_ALPHA + (1 + 2 * LOG_INVERSE_ALPHA).ln()
REFERENCE_MESSAGES = 2000
LOOK_FROM = 30
LOOK_EVERY = 100
PER_MESSAGE = Decimal("1e-15")
HELD_OUT_KINDS = ("held_out", "held_out_open", "held_out_outlier")
USE = AgentAction.Kind.USE.value
IGNORE = AgentAction.Kind.IGNORE.value


# --- Statistics (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """n, Σx and Σx² of a sample: all its mean and variance need, and additive."""

    n: int = 0
    total: Decimal = Decimal(0)
    total_sq: Decimal = Decimal(0)

    @classmethod
    def of(cls, values: Iterable[Decimal]) -> Moments:
        n, total, total_sq = 0, Decimal(0), Decimal(0)
        with localcontext(EXACT):
            for x in values:
                n, total, total_sq = n + 1, total + x, total_sq + x * x
        return cls(n=n, total=total, total_sq=total_sq)

    def plus(self, x: Decimal) -> Moments:
        return Moments(n=self.n + 1, total=self.total + x, total_sq=self.total_sq + x * x)

    @property
    def mean(self) -> Decimal | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> Decimal | None:
        """The sample variance (n − 1)."""
        if self.n < 2:
            return None
        mean = self.total / self.n
        return max(Decimal(0), (self.total_sq - self.n * mean * mean) / (self.n - 1))


@dataclass(frozen=True)
class Interval:
    low: Decimal
    high: Decimal

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def covers(self, value: Decimal) -> bool:
        return self.low <= value <= self.high


def mean_interval(m: Moments) -> Interval | None:
    """x̄ ± 1.96·s/√n; None below two values."""
    variance, mean = m.variance, m.mean
    if variance is None or mean is None:
        return None
    half = Z95 * (variance / m.n).sqrt()
    return Interval(mean - half, mean + half)


def share_interval(k: int, n: int) -> Interval | None:
    """Wilson's score interval of k successes in n."""
    if n == 0:
        return None
    p, z2 = Decimal(k) / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * (p * (1 - p) / n + z2 / (4 * n * n)).sqrt()
    # At 0 (or n) of n the bound is 0 (or 1) exactly; the arithmetic would leave a 1E-28.
    low = Decimal(0) if k == 0 else max(Decimal(0), centre - half)
    high = Decimal(1) if k == n else min(Decimal(1), centre + half)
    return Interval(low, high)


def _difference_variance(control: Moments, arm: Moments) -> Decimal | None:
    if control.variance is None or arm.variance is None:
        return None
    return control.variance / control.n + arm.variance / arm.n


def difference_interval(control: Moments, arm: Moments) -> Interval | None:
    """Welch: (x̄_arm − x̄_control) ± 1.96·√(s²_c/n_c + s²_a/n_a)."""
    variance = _difference_variance(control, arm)
    if variance is None or control.mean is None or arm.mean is None:
        return None
    delta, half = arm.mean - control.mean, Z95 * variance.sqrt()
    return Interval(delta - half, delta + half)


def mixture_variance(control: Moments, arm: Moments) -> Decimal | None:
    """τ²: MIXTURE_FACTOR × Var(Δ̂) scaled to REFERENCE_MESSAGES messages of the pair."""
    variance = _difference_variance(control, arm)
    if variance is None:
        return None
    return MIXTURE_FACTOR * variance * (control.n + arm.n) / REFERENCE_MESSAGES


@dataclass(frozen=True)
class Look:
    """One look of the sequential test: the always-valid interval at that moment and 1/Λ."""

    control: int  # messages in the control arm at the look
    arm: int
    interval: Interval
    inverse_likelihood_ratio: Decimal


def sequence_look(control: Moments, arm: Moments, *, alpha: Decimal = ALPHA) -> Look | None:
    """The mixture confidence sequence at one look (see the module's docstring); None while a
    variance is unknown or zero (nothing says how far the difference may wander yet)."""
    variance = _difference_variance(control, arm)
    tau2 = mixture_variance(control, arm)
    if not variance or not tau2 or control.mean is None or arm.mean is None:
        return None
    delta = arm.mean - control.mean
    spread = (variance + tau2) / variance
    log_inverse_alpha = LOG_INVERSE_ALPHA if alpha == ALPHA else (1 / alpha).ln()
    half = (variance * (variance + tau2) / tau2 * (2 * log_inverse_alpha + spread.ln())).sqrt()
    log_ratio = tau2 * delta * delta / (2 * variance * (variance + tau2)) - spread.ln() / 2
    inverse = (-log_ratio).exp() if log_ratio > -50 else Decimal(1)
    return Look(
        control=control.n,
        arm=arm.n,
        interval=Interval(delta - half, delta + half),
        inverse_likelihood_ratio=min(Decimal(1), inverse),
    )


@dataclass(frozen=True)
class Sequential:
    """The sequential test over all looks: the running intersection of the always-valid
    intervals, the always-valid p-value, and when the difference first became significant."""

    interval: Interval | None
    p_value: Decimal | None
    looks: int
    significant: bool
    significant_at: int | None  # messages of the pair at the first significant look

    def as_text(self) -> str:
        if self.interval is None:
            return "Not enough messages yet."
        if self.significant:
            return "Significant: the always-valid interval excludes 0."
        return "Not significant yet: the always-valid interval includes 0."


def sequential_test(
    looks: Iterable[tuple[Moments, Moments]], *, alpha: Decimal = ALPHA
) -> Sequential:
    """Look at each (control, arm) pair of cumulative moments in turn."""
    low: Decimal | None = None
    high: Decimal | None = None
    p_value: Decimal | None = None
    count, first = 0, None
    for control, arm in looks:
        look = sequence_look(control, arm, alpha=alpha)
        if look is None:
            continue
        count += 1
        low = look.interval.low if low is None else max(low, look.interval.low)
        high = look.interval.high if high is None else min(high, look.interval.high)
        ratio = look.inverse_likelihood_ratio
        p_value = ratio if p_value is None else min(p_value, ratio)
        if first is None and (low > 0 or high < 0):
            first = look.control + look.arm
    interval = None if low is None or high is None else Interval(low, high)
    return Sequential(
        interval=interval,
        p_value=p_value,
        looks=count,
        significant=interval is not None and interval.excludes_zero(),
        significant_at=first,
    )


def looks_in_order(
    control: Sequence[Decimal],
    arm: Sequence[Decimal],
    order: Sequence[int],
    *,
    look_from: int = LOOK_FROM,
    look_every: int = LOOK_EVERY,
) -> Iterator[tuple[Moments, Moments]]:
    """The cumulative moments of both arms as their messages arrived (`order`: 0 for the
    control's next value, 1 for the arm's), at a look after every `look_every` messages of
    the pair once each arm has `look_from`, and at the end."""
    n = [0, 0]
    total = [Decimal(0), Decimal(0)]
    total_sq = [Decimal(0), Decimal(0)]
    values = (iter(control), iter(arm))
    since = 0

    def now() -> tuple[Moments, Moments]:
        return (
            Moments(n=n[0], total=total[0], total_sq=total_sq[0]),
            Moments(n=n[1], total=total[1], total_sq=total_sq[1]),
        )

    for side in order:
        x = next(values[side])
        # EXACT's own methods, not a `localcontext` around the loop: a generator's decimal
        # context would leak into its caller.
        total[side] = EXACT.add(total[side], x)
        total_sq[side] = EXACT.add(total_sq[side], EXACT.multiply(x, x))
        n[side] += 1
        since += 1
        if since >= look_every and min(n) >= look_from:
            since = 0
            yield now()
    if since and min(n) >= look_from:
        yield now()


# --- An experiment's results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    value: Decimal | None
    ci95: Interval | None


@dataclass(frozen=True)
class ArmResult:
    arm_id: int
    name: str
    position: int
    policy_id: int
    policy_name: str
    share: Decimal
    messages: int  # drafted messages (held-out conversations not included)
    held_out: int
    encs_usd: Decimal  # the arm's total ENCS (the engine's, rounded once)
    encs_per_message_usd: Estimate
    p_use: Estimate
    p_ignore: Estimate
    cost_per_message_usd: Estimate
    waited: int  # drafts shown and ready (the wait's sample)
    wait_seconds: Estimate


@dataclass(frozen=True)
class Comparison:
    """An arm against the control: differences (arm − control) with 95 % intervals, and the
    sequential verdict on ENCS per message."""

    arm: ArmResult
    encs_per_message_usd: Estimate
    p_use: Estimate
    p_ignore: Estimate
    cost_per_message_usd: Estimate
    wait_seconds: Estimate
    sequential: Sequential


@dataclass(frozen=True)
class ExperimentResults:
    experiment: Experiment
    start: date
    last: date
    baseline: Baseline
    arms: tuple[ArmResult, ...]
    comparisons: tuple[Comparison, ...]  # every arm after the first, against the first


@dataclass
class _Message:
    """One drafted message of an arm: what its statistics need."""

    created_at: datetime
    encs: Decimal  # labour saving − cost, exact (scaled back from the engine's × 3600)
    cost: Decimal
    kind: str
    wait: Decimal | None


@dataclass
class _ArmData:
    arm: ExperimentArm
    facts: list[Fact]
    messages: list[_Message]
    held_out: int = 0


def experiment_period(experiment: Experiment) -> Scope:
    """The experiment's days (local time), from its start to its stop (or today)."""
    start = timezone.localdate(experiment.started_at)
    last = timezone.localdate(experiment.stopped_at) if experiment.stopped_at else None
    last = max(start, last or timezone.localdate())
    return Scope(start=start, end=last + timedelta(days=1), team_ids=(experiment.team_id,))


def _decimal(value: Fraction) -> Decimal:
    with localcontext() as context:
        context.prec = 60
        return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(PER_MESSAGE)


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6


def _arm_data(experiment: Experiment, *, book: SettingsBook, baseline: Baseline) -> list[_ArmData]:
    arms = list(experiment.arms.select_related("policy").order_by("position"))
    data = {arm.pk: _ArmData(arm=arm, facts=[], messages=[]) for arm in arms}
    drafts = Draft.objects.filter(experiment_arm__experiment=experiment)
    rows = facts_of(
        drafts, keys=("id", "experiment_arm_id", "created_at", "ready_at", "first_shown_at")
    )
    rates: dict[date, Decimal] = {}
    for keys, fact in rows:
        item = data[keys["experiment_arm_id"]]
        item.facts.append(fact)
        if fact.kind in HELD_OUT_KINDS:
            item.held_out += fact.drafts
            continue
        rate = rates.get(fact.day)
        if rate is None:
            rate = rates[fact.day] = book.at(experiment.team_id, fact.day).agent_hourly_usd
        with localcontext(EXACT):
            saving_x3600 = _saving_x3600(fact, rate=rate, baseline=baseline.seconds)
        # A draft's ENCS has a 1/3600 in it: kept to PER_MESSAGE places (far below a
        # figure's rounding) for the spread; the arm's ENCS itself is the engine's, exact.
        encs = Fraction(saving_x3600) / 3600 - Fraction(fact.cost)
        shown, ready = keys["first_shown_at"], keys["ready_at"]
        item.messages.append(
            _Message(
                created_at=keys["created_at"],
                encs=_decimal(encs),
                cost=fact.cost,
                kind=fact.kind,
                wait=max(Decimal(0), _seconds(ready - shown)) if shown and ready else None,
            )
        )
    for item in data.values():
        item.messages.sort(key=lambda m: m.created_at)
    return [data[arm.pk] for arm in arms]


def _money(interval: Interval | None) -> Interval | None:
    return None if interval is None else Interval(money(interval.low), money(interval.high))


def _rounded(interval: Interval | None, places: Decimal) -> Interval | None:
    if interval is None:
        return None
    return Interval(interval.low.quantize(places), interval.high.quantize(places))


def _indicator(item: _ArmData, kind: str) -> Moments:
    return Moments.of(Decimal(m.kind == kind) for m in item.messages)


def _arm_result(
    item: _ArmData, *, scope: Scope, book: SettingsBook, baseline: Baseline
) -> ArmResult:
    arm = item.arm
    drafted = [f for f in item.facts if f.kind not in HELD_OUT_KINDS]
    total, _groups, _b = totals(
        drafted, scope=scope, book=book, baselines={arm.experiment.team_id: baseline}
    )
    figures = total.figures()
    n = len(item.messages)
    encs = Moments.of(m.encs for m in item.messages)
    cost = Moments.of(m.cost for m in item.messages)
    waits = [m.wait for m in item.messages if m.wait is not None]
    wait = Moments.of(waits)
    decomposition = figures.decomposition
    uses = sum(1 for m in item.messages if m.kind == USE)
    ignores = sum(1 for m in item.messages if m.kind == IGNORE)
    return ArmResult(
        arm_id=arm.pk,
        name=arm.name,
        position=arm.position,
        policy_id=arm.policy_id,
        policy_name=arm.policy.name,
        share=arm.share,
        messages=n,
        held_out=item.held_out,
        encs_usd=figures.encs_usd,
        # The dashboard's ENCS per drafted message (its decomposition), the same number.
        encs_per_message_usd=Estimate(
            decomposition.encs_per_draft_usd if decomposition else None,
            _money(mean_interval(encs)),
        ),
        p_use=Estimate(
            (Decimal(uses) / n).quantize(SHARE) if n else None,
            _rounded(share_interval(uses, n), SHARE),
        ),
        p_ignore=Estimate(
            (Decimal(ignores) / n).quantize(SHARE) if n else None,
            _rounded(share_interval(ignores, n), SHARE),
        ),
        cost_per_message_usd=Estimate(
            money(cost.mean) if cost.mean is not None else None, _money(mean_interval(cost))
        ),
        waited=len(waits),
        wait_seconds=Estimate(
            wait.mean.quantize(SECONDS) if wait.mean is not None else None,
            _rounded(mean_interval(wait), SECONDS),
        ),
    )


def _difference(control: Moments, arm: Moments, *, places: Decimal | None = None) -> Estimate:
    if control.mean is None or arm.mean is None:
        return Estimate(None, None)
    delta = arm.mean - control.mean
    interval = difference_interval(control, arm)
    if places is None:
        return Estimate(money(delta), _money(interval))
    return Estimate(delta.quantize(places), _rounded(interval, places))


def _comparison(control: _ArmData, item: _ArmData, result: ArmResult) -> Comparison:
    def moments(data: _ArmData, attribute: str) -> Moments:
        return Moments.of(
            getattr(m, attribute) for m in data.messages if getattr(m, attribute) is not None
        )

    # Both arms' messages merged in arrival order: the looks the sequential test makes.
    merged = sorted(
        [(m.created_at, 0, m.encs) for m in control.messages]
        + [(m.created_at, 1, m.encs) for m in item.messages],
        key=lambda row: (row[0], row[1]),
    )
    sequential = sequential_test(
        looks_in_order(
            [m.encs for m in control.messages],
            [m.encs for m in item.messages],
            [side for _at, side, _x in merged],
        )
    )
    if sequential.interval is not None:
        sequential = Sequential(
            interval=_money(sequential.interval),
            p_value=None if sequential.p_value is None else sequential.p_value.quantize(SHARE),
            looks=sequential.looks,
            significant=sequential.significant,
            significant_at=sequential.significant_at,
        )
    return Comparison(
        arm=result,
        encs_per_message_usd=_difference(moments(control, "encs"), moments(item, "encs")),
        p_use=_difference(_indicator(control, USE), _indicator(item, USE), places=SHARE),
        p_ignore=_difference(_indicator(control, IGNORE), _indicator(item, IGNORE), places=SHARE),
        cost_per_message_usd=_difference(moments(control, "cost"), moments(item, "cost")),
        wait_seconds=_difference(moments(control, "wait"), moments(item, "wait"), places=SECONDS),
        sequential=sequential,
    )


def experiment_results(
    experiment: Experiment,
    *,
    book: SettingsBook | None = None,
    baselines: Mapping[int, Baseline] | None = None,
) -> ExperimentResults:
    """The experiment's results per arm and each arm against the first (two queries, plus
    the team's baseline over the experiment's days when `baselines` does not hold it)."""
    book = book or SettingsBook.load()
    scope = experiment_period(experiment)
    if baselines is None or experiment.team_id not in baselines:
        baselines = scope_baselines(scope, book=book)
    baseline = baselines[experiment.team_id]
    data = _arm_data(experiment, book=book, baseline=baseline)
    arms = tuple(_arm_result(item, scope=scope, book=book, baseline=baseline) for item in data)
    comparisons = tuple(
        _comparison(data[0], item, result) for item, result in zip(data[1:], arms[1:], strict=True)
    )
    return ExperimentResults(
        experiment=experiment,
        start=scope.start,
        last=scope.end - timedelta(days=1),
        baseline=baseline,
        arms=arms,
        comparisons=comparisons,
    )
