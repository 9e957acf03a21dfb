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
through their different numbers of answered drafts). The agent's wait is the ENCS report's
(accounting.facts.wait_seconds_expression): max(0, ready_at − first_shown_at), at most the
handle time, over the arm's answered drafts.

Intervals (fixed horizon, 95 %). Conversations are what is drawn into arms, and the turns of
one conversation are correlated (one customer, one agent): every figure is a ratio over
conversations, R = Σy/Σm (y a conversation's total, m its messages), with the delta-method
variance Σ(y − R·m)² / (n(n−1)·m̄²) over its n conversations (s²/n when each has one
message). A mean: R ± 1.96·√Var(R) (the central limit theorem: an arm of an experiment worth
reading has hundreds of conversations). A share: Wilson's score interval (right at 0 or 1,
where ± 1.96·√(p(1−p)/n) collapses) at the effective sample size, the messages over the
design effect. A difference of two arms: Welch's, Δ̂ ± 1.96·√(Var(R_a) + Var(R_b)) (unequal
variances and sizes).

The sequential test: a normal-mixture confidence sequence for the difference of ENCS per
message (Robbins' mixture as in Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", the two-sided normal-mixture boundary;
it is Johari, Pekelis & Walsh's mSPRT, 2017, with mixing variance τ²). With V = Var(R_a) +
Var(R_b) the plug-in (clustered) variance of Δ̂ (Waudby-Smith et al. 2024, asymptotic confidence
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

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from django.utils import timezone

from accounting.engine import EXACT, SettingsBook, money, saving_x3600, totals
from accounting.facts import DRAFTED_KINDS, Fact, Scope, facts_of
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
    """Sums over a sample of clusters — a conversation, whose messages are not independent
    (one customer, one agent, one arm) — with y a cluster's total (of ENCS, cost, a 0/1
    indicator…) and m its number of messages: all a ratio estimate (Σy/Σm, per message) and
    its delta-method variance need. A message on its own is a cluster of one, and then these
    are the plain mean and s²/n."""

    n: int = 0  # clusters
    total: Decimal = Decimal(0)  # Σy
    total_sq: Decimal = Decimal(0)  # Σy²
    size: Decimal = Decimal(0)  # Σm, the messages
    size_sq: Decimal = Decimal(0)  # Σm²
    cross: Decimal = Decimal(0)  # Σy·m

    @classmethod
    def of(cls, values: Iterable[Decimal]) -> Moments:
        """Independent values (each a cluster of one)."""
        return cls.of_clusters((x, 1) for x in values)

    @classmethod
    def of_clusters(cls, clusters: Iterable[tuple[Decimal, int]]) -> Moments:
        """(y, m) per cluster: its total and its number of messages."""
        n, y, yy, m, mm, ym = 0, Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        with localcontext(EXACT):
            for total, size in clusters:
                n += 1
                y, yy, m, mm, ym = (
                    y + total,
                    yy + total * total,
                    m + size,
                    mm + size * size,
                    ym + total * size,
                )
        return cls(n=n, total=y, total_sq=yy, size=m, size_sq=mm, cross=ym)

    @property
    def mean(self) -> Decimal | None:
        """Σy/Σm: per message."""
        return self.total / self.size if self.size else None

    @property
    def mean_variance(self) -> Decimal | None:
        """Var(Σy/Σm) by the delta method over clusters: Σ(y − R·m)² / (n(n−1)·m̄²), with
        R the ratio and m̄ = Σm/n (for clusters of one: s²/n). None below two clusters."""
        if self.n < 2 or not self.size:
            return None
        ratio = self.total / self.size
        residual = self.total_sq - 2 * ratio * self.cross + ratio * ratio * self.size_sq
        mean_size = self.size / self.n
        return max(Decimal(0), residual) / (self.n * (self.n - 1) * mean_size * mean_size)


@dataclass(frozen=True)
class Interval:
    low: Decimal
    high: Decimal

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def covers(self, value: Decimal) -> bool:
        return self.low <= value <= self.high


def mean_interval(m: Moments) -> Interval | None:
    """R ± 1.96·√Var(R); None below two clusters."""
    variance, mean = m.mean_variance, m.mean
    if variance is None or mean is None:
        return None
    half = Z95 * variance.sqrt()
    return Interval(mean - half, mean + half)


def wilson(p: Decimal, n: Decimal) -> Interval | None:
    """Wilson's score interval for a share p out of n (n may be an effective size)."""
    if n <= 0:
        return None
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * (p * (1 - p) / n + z2 / (4 * n * n)).sqrt()
    # At a share of 0 (or 1) the bound is 0 (or 1) exactly; the arithmetic would leave 1E-28.
    low = Decimal(0) if p == 0 else max(Decimal(0), centre - half)
    high = Decimal(1) if p == 1 else min(Decimal(1), centre + half)
    return Interval(low, high)


def share_interval(k: int, n: int) -> Interval | None:
    """Wilson's score interval of k successes in n independent trials."""
    return wilson(Decimal(k) / n, Decimal(n)) if n else None


def clustered_share_interval(indicator: Moments) -> Interval | None:
    """Wilson's interval at the effective sample size: the messages divided by the design
    effect (the clustered variance of the share over the variance it would have if the
    messages were independent, p(1 − p)/(N − 1)); N itself when that cannot be estimated."""
    p, messages = indicator.mean, indicator.size
    if p is None:
        return None
    variance = indicator.mean_variance
    effective = messages
    if variance and 0 < p < 1 and messages > 1:
        effective = messages * p * (1 - p) / ((messages - 1) * variance)
    return wilson(p, effective)


def _difference_variance(control: Moments, arm: Moments) -> Decimal | None:
    if control.mean_variance is None or arm.mean_variance is None:
        return None
    return control.mean_variance + arm.mean_variance


def difference_interval(control: Moments, arm: Moments) -> Interval | None:
    """Welch: (R_arm − R_control) ± 1.96·√(Var(R_control) + Var(R_arm))."""
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
    return MIXTURE_FACTOR * variance * (control.size + arm.size) / REFERENCE_MESSAGES


@dataclass(frozen=True)
class Look:
    """One look of the sequential test: the always-valid interval at that moment and 1/Λ."""

    control: Decimal  # messages in the control arm at the look
    arm: Decimal
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
        control=control.size,
        arm=arm.size,
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
    significant_at: Decimal | None  # messages of the pair at the first significant look

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


Event = tuple[int, Hashable, Decimal]  # (0: control, 1: arm; conversation; value)


@dataclass
class _Running:
    """Moments kept up to date message by message. Adding x to a cluster of (y, m) changes
    Σy² by 2yx + x², Σm² by 2m + 1 and Σym by y + x(m + 1). EXACT's own methods, not a
    `localcontext`: inside a generator, a decimal context would leak into its caller."""

    n: int = 0
    total: Decimal = Decimal(0)
    total_sq: Decimal = Decimal(0)
    size: int = 0
    size_sq: int = 0
    cross: Decimal = Decimal(0)
    clusters: dict[Hashable, tuple[Decimal, int]] = field(default_factory=dict)

    def add(self, conversation: Hashable, x: Decimal) -> None:
        y, m = self.clusters.get(conversation, (Decimal(0), 0))
        self.n += m == 0
        self.total = EXACT.add(self.total, x)
        self.total_sq = EXACT.add(
            self.total_sq, EXACT.fma(EXACT.multiply(2, y), x, EXACT.multiply(x, x))
        )
        self.size += 1
        self.size_sq += 2 * m + 1
        self.cross = EXACT.add(self.cross, EXACT.fma(x, Decimal(m + 1), y))
        self.clusters[conversation] = (EXACT.add(y, x), m + 1)

    def moments(self) -> Moments:
        return Moments(
            n=self.n,
            total=self.total,
            total_sq=self.total_sq,
            size=Decimal(self.size),
            size_sq=Decimal(self.size_sq),
            cross=self.cross,
        )


def looks_in_order(
    events: Iterable[Event], *, look_from: int = LOOK_FROM, look_every: int = LOOK_EVERY
) -> Iterator[tuple[Moments, Moments]]:
    """Both arms' cumulative moments (clustered by conversation) as their messages arrived,
    at a look after every `look_every` messages of the pair once each arm has `look_from`,
    and at the end."""
    sums = (_Running(), _Running())
    since = 0
    for side, conversation, x in events:
        sums[side].add(conversation, x)
        since += 1
        if since >= look_every and min(sums[0].size, sums[1].size) >= look_from:
            since = 0
            yield sums[0].moments(), sums[1].moments()
    if since and min(sums[0].size, sums[1].size) >= look_from:
        yield sums[0].moments(), sums[1].moments()


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
    waited: int  # answered drafts (the wait's sample)
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
    conversation_id: int
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


def _arm_data(experiment: Experiment, *, book: SettingsBook, baseline: Baseline) -> list[_ArmData]:
    arms = list(experiment.arms.select_related("policy").order_by("position"))
    data = {arm.pk: _ArmData(arm=arm, facts=[], messages=[]) for arm in arms}
    drafts = Draft.objects.filter(experiment_arm__experiment=experiment)
    rows = facts_of(
        drafts,
        keys=(
            "id",
            "experiment_arm_id",
            "created_at",
            "message__conversation_id",
        ),
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
            saving = saving_x3600(fact, rate=rate, baseline=baseline.seconds)
        # A draft's ENCS has a 1/3600 in it: kept to PER_MESSAGE places (far below a
        # figure's rounding) for the spread; the arm's ENCS itself is the engine's, exact.
        encs = Fraction(saving) / 3600 - Fraction(fact.cost)
        item.messages.append(
            _Message(
                created_at=keys["created_at"],
                conversation_id=keys["message__conversation_id"],
                encs=_decimal(encs),
                cost=fact.cost,
                kind=fact.kind,
                # The ENCS report's wait (accounting.facts): answered drafts only, at most
                # the handle time, so an arm's wait is the dashboard's for its drafts.
                wait=fact.wait_seconds if fact.kind in DRAFTED_KINDS else None,
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


def _clustered(item: _ArmData, value: Callable[[_Message], Decimal | None]) -> Moments:
    """Moments of `value` over the arm's messages that have one, clustered by conversation
    (the unit the arms are drawn for)."""
    clusters: dict[int, tuple[Decimal, int]] = {}
    for message in item.messages:
        x = value(message)
        if x is not None:
            y, m = clusters.get(message.conversation_id, (Decimal(0), 0))
            clusters[message.conversation_id] = (y + x, m + 1)
    return Moments.of_clusters(clusters.values())


def _indicator(item: _ArmData, kind: str) -> Moments:
    return _clustered(item, lambda m: Decimal(m.kind == kind))


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
    encs = _clustered(item, lambda m: m.encs)
    cost = _clustered(item, lambda m: m.cost)
    wait = _clustered(item, lambda m: m.wait)
    decomposition = figures.decomposition
    uses, ignores = _indicator(item, USE), _indicator(item, IGNORE)
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
            uses.mean.quantize(SHARE) if uses.mean is not None else None,
            _rounded(clustered_share_interval(uses), SHARE),
        ),
        p_ignore=Estimate(
            ignores.mean.quantize(SHARE) if ignores.mean is not None else None,
            _rounded(clustered_share_interval(ignores), SHARE),
        ),
        cost_per_message_usd=Estimate(
            money(cost.mean) if cost.mean is not None else None, _money(mean_interval(cost))
        ),
        waited=int(wait.size),
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
    # Both arms' messages merged in arrival order: the looks the sequential test makes.
    merged = sorted(
        [(m.created_at, 0, m.conversation_id, m.encs) for m in control.messages]
        + [(m.created_at, 1, m.conversation_id, m.encs) for m in item.messages],
        key=lambda row: (row[0], row[1]),
    )
    sequential = sequential_test(
        looks_in_order((side, conversation, x) for _at, side, conversation, x in merged)
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
        encs_per_message_usd=_difference(
            _clustered(control, lambda m: m.encs), _clustered(item, lambda m: m.encs)
        ),
        p_use=_difference(_indicator(control, USE), _indicator(item, USE), places=SHARE),
        p_ignore=_difference(_indicator(control, IGNORE), _indicator(item, IGNORE), places=SHARE),
        cost_per_message_usd=_difference(
            _clustered(control, lambda m: m.cost), _clustered(item, lambda m: m.cost)
        ),
        wait_seconds=_difference(
            _clustered(control, lambda m: m.wait),
            _clustered(item, lambda m: m.wait),
            places=SECONDS,
        ),
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
