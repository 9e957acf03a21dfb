"""A candidate adapter against the current model, on the same messages.

While a DistillRun is in shadow, a share of its policy's drafts is also answered by the
adapter (DraftAttempt purpose "shadow", never shown), and for those drafts the shadowed tier's
own answer keeps its text. So each such draft is a pair: the same prompt answered by the
candidate and by the current model. `compare_shadow` reads those pairs and, for each figure,
averages the per-draft differences candidate − current with a 95 % interval. Pairing removes
the spread between messages (a hard message is hard for both), so a few dozen drafts already
say something that two independent samples would need many more for.

The figures: closeness to what the agent sent (ROUGE-L, and 1 − the normalised edit distance,
the same distance every AgentAction stores: drafting.engine.edits), only on drafts with a sent
reply; the learned scorer's P(good) (the attempts' score); cost (USD, Decimal); latency (ms).

The interval is Student's t on the paired differences: mean ± t(0.975, n − 1) · s / √n. Below
two pairs there is no interval ("too few"). The maths is in Decimal, so money stays exact, and
needs no scipy: the quantiles of t are a table up to 30 degrees of freedom and a Cornish–Fisher
expansion beyond (within 1e-7 there; a test checks both against scipy).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist

from drafting.engine.edits import edit_distance
from drafting.learning.rouge import rouge_l
from drafting.models import AgentAction, DistillRun, DraftAttempt

# Drafts compared at most: the latest ones. ROUGE-L is a Python LCS per pair (≈1 ms for two
# replies of a few dozen words), so the admin page stays quick on a long shadow period.
MAX_DRAFTS = 2000

METHOD = "95 % Student t interval on the per-draft differences (candidate − current)"

# t(0.975, df) for df = 1…30 (scipy.stats.t.ppf, 6 places).
_T975 = (
    12.706205,
    4.302653,
    3.182446,
    2.776445,
    2.570582,
    2.446912,
    2.364624,
    2.306004,
    2.262157,
    2.228139,
    2.200985,
    2.178813,
    2.160369,
    2.144787,
    2.131450,
    2.119905,
    2.109816,
    2.100922,
    2.093024,
    2.085963,
    2.079614,
    2.073873,
    2.068658,
    2.063899,
    2.059539,
    2.055529,
    2.051831,
    2.048407,
    2.045230,
    2.042272,
)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError("Student's t needs at least one degree of freedom.")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish–Fisher expansion of t around the normal quantile (Abramowitz & Stegun 26.7.5).
    z = NormalDist().inv_cdf(0.975)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Paired:
    """One figure of the candidate against the current model over `n` paired drafts."""

    key: str
    label: str
    n: int
    candidate: Decimal | None  # mean over the pairs
    current: Decimal | None
    difference: Decimal | None  # mean of candidate − current
    low: Decimal | None  # the difference's 95 % interval; None below two pairs
    high: Decimal | None
    higher_is_better: bool
    places: int  # decimals worth showing

    @property
    def too_few(self) -> bool:
        return self.low is None

    @property
    def verdict(self) -> str:
        """Which model the interval favours, if it excludes zero."""
        if self.low is None or self.high is None:
            return "too few"
        if self.low <= 0 <= self.high:
            return "no clear difference"
        candidate_higher = self.low > 0
        return "candidate" if candidate_higher == self.higher_is_better else "current"


def paired(
    pairs: Sequence[tuple[Decimal, Decimal]],
    *,
    key: str,
    label: str,
    higher_is_better: bool = True,
    places: int = 3,
) -> Paired:
    """Means of (candidate, current) pairs, the mean difference and its t interval."""
    n = len(pairs)
    if n == 0:
        return Paired(key, label, 0, None, None, None, None, None, higher_is_better, places)
    candidate = sum((c for c, _ in pairs), Decimal(0)) / n
    current = sum((k for _, k in pairs), Decimal(0)) / n
    differences = [c - k for c, k in pairs]
    mean = sum(differences, Decimal(0)) / n
    low = high = None
    if n >= 2:
        variance = sum(((d - mean) ** 2 for d in differences), Decimal(0)) / (n - 1)
        half = Decimal(repr(t_quantile_975(n - 1))) * (variance / n).sqrt()
        low, high = mean - half, mean + half
    return Paired(key, label, n, candidate, current, mean, low, high, higher_is_better, places)


@dataclass(frozen=True)
class Answer:
    """What one model answered for one draft: the fields the comparison reads."""

    text: str
    score: Decimal | None
    cost: Decimal
    latency_ms: int


@dataclass(frozen=True)
class Pair:
    """A draft answered by both models, with what the agent sent (None: no reply yet)."""

    draft_id: int
    candidate: Answer
    current: Answer
    sent: str | None


@dataclass(frozen=True)
class Comparison:
    n_drafts: int  # drafts answered by both
    n_sent: int  # of which the agent has sent a reply
    shadow_errors: int  # shadow attempts that failed (not in the pairs)
    figures: tuple[Paired, ...]
    limited: bool = False  # only the latest MAX_DRAFTS drafts were read
    method: str = METHOD

    @property
    def too_few(self) -> bool:
        return self.n_drafts < 2


def _closeness(sent: str, text: str) -> tuple[Decimal, Decimal]:
    """ROUGE-L and edit similarity of a model's answer to the reply the agent sent."""
    rouge = Decimal(repr(rouge_l(sent, text)))
    return rouge, 1 - edit_distance(text, sent)


def compare_pairs(
    pairs: Iterable[Pair], *, shadow_errors: int = 0, limited: bool = False
) -> Comparison:
    """The comparison table of already paired answers (pure: no database)."""
    pairs = list(pairs)
    rouge: list[tuple[Decimal, Decimal]] = []
    similarity: list[tuple[Decimal, Decimal]] = []
    scores: list[tuple[Decimal, Decimal]] = []
    for pair in pairs:
        if pair.sent is not None and pair.sent.strip():
            (r_cand, s_cand), (r_cur, s_cur) = (
                _closeness(pair.sent, pair.candidate.text),
                _closeness(pair.sent, pair.current.text),
            )
            rouge.append((r_cand, r_cur))
            similarity.append((s_cand, s_cur))
        if pair.candidate.score is not None and pair.current.score is not None:
            scores.append((pair.candidate.score, pair.current.score))
    figures = (
        paired(rouge, key="rouge_l", label="ROUGE-L to the reply sent"),
        paired(similarity, key="edit_similarity", label="Edit similarity to the reply sent"),
        paired(scores, key="p_good", label="Learned scorer's P(good)"),
        paired(
            [(p.candidate.cost, p.current.cost) for p in pairs],
            key="cost_usd",
            label="Cost per draft (USD)",
            higher_is_better=False,
            places=6,
        ),
        paired(
            [(Decimal(p.candidate.latency_ms), Decimal(p.current.latency_ms)) for p in pairs],
            key="latency_ms",
            label="Latency (ms)",
            higher_is_better=False,
            places=0,
        ),
    )
    return Comparison(
        n_drafts=len(pairs),
        n_sent=len(rouge),
        shadow_errors=shadow_errors,
        figures=figures,
        limited=limited,
    )


def _answer(attempt: DraftAttempt) -> Answer:
    return Answer(
        text=attempt.text, score=attempt.score, cost=attempt.cost, latency_ms=attempt.latency_ms
    )


def compare_shadow(*, run: DistillRun, limit: int = MAX_DRAFTS) -> Comparison:
    """Candidate (the run's shadow answers) against current (the shadowed tier's answers).

    Steps: the run's shadow attempts on its own team's drafts, the latest `limit` drafts
    (one shadow answer per draft: the first, should a retry have made two); the same drafts'
    answered attempts of the shadowed tier (purpose draft, ok, text kept; the last one if the
    tier was retried); the agents' sent replies; then `compare_pairs`.
    """
    if run.endpoint_id is None or run.shadow_tier is None:
        return compare_pairs([])
    shadows = DraftAttempt.objects.filter(
        purpose=DraftAttempt.Purpose.SHADOW,
        endpoint_id=run.endpoint_id,
        draft__message__conversation__team_id=run.team_id,
    )
    shadow_errors = shadows.filter(outcome=DraftAttempt.Outcome.ERROR).count()
    candidates: dict[int, DraftAttempt] = {}
    limited = False
    for attempt in shadows.filter(outcome=DraftAttempt.Outcome.OK).order_by(
        "-draft_id", "started_at", "id"
    ):
        if attempt.draft_id in candidates:
            continue
        if len(candidates) == limit:
            limited = True
            break
        candidates[attempt.draft_id] = attempt
    current: dict[int, DraftAttempt] = {}
    for attempt in (
        DraftAttempt.objects.filter(
            draft_id__in=candidates,
            purpose=DraftAttempt.Purpose.DRAFT,
            tier=run.shadow_tier,
            outcome=DraftAttempt.Outcome.OK,
        )
        .exclude(text="")
        .exclude(endpoint_id=run.endpoint_id)
        .order_by("started_at", "id")
    ):
        current[attempt.draft_id] = attempt  # the last answer wins
    sent = dict(
        AgentAction.objects.filter(draft_id__in=current).values_list("draft_id", "final_text")
    )
    pairs = [
        Pair(
            draft_id=draft_id,
            candidate=_answer(candidates[draft_id]),
            current=_answer(attempt),
            sent=sent.get(draft_id),
        )
        for draft_id, attempt in sorted(current.items())
    ]
    return compare_pairs(pairs, shadow_errors=shadow_errors, limited=limited)
