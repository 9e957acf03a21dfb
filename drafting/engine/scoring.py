"""Scorers: g(context, draft) ∈ [0, 1], the cascade's judgement of a draft.

The default scorer needs no training: the model's own confidence (exp of the mean token
logprob, when the server returns logprobs) discounted by cheap checks for drafts an agent
cannot use — empty, cut off at the token limit, a refusal, or in another script than the
customer's message.

The learned scorer (`LearnedScorer`: penalised logistic regression on embeddings of the customer
turn and the draft plus cheap signals, trained on agent actions by drafting.learning.scorer) plugs in
behind the same `Scorer` protocol. It also says which trained model judged (`judge` → `Verdict`)
and why a draft scored low (`explain`: occlusion weights per word, one batch of embeddings).
Whenever it cannot embed, it answers with the default scorer's score: a draft is never lost to
the scorer.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from drafting.engine.embeddings import Embedder, EmbeddingError
from drafting.engine.providers import Completion

if TYPE_CHECKING:
    # scikit-learn takes a second to import: only processes that score with a model pay it.
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

# Without logprobs the model's confidence is unknown: neither good nor bad.
NEUTRAL = 0.6
TRUNCATED_FACTOR = 0.6
REFUSAL_CAP = 0.1
WRONG_SCRIPT_CAP = 0.2

_REFUSAL = re.compile(
    r"\b(as an ai( language model)?|i('m| am) (just )?an ai|i can(no|')t (help|assist) with"
    r"|i('m| am) (not able|unable) to (help|assist)|i don't have (the ability|access))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ScoringContext:
    """What the scorer may look at besides the draft: the customer's turn, the draft's tier
    position and the drafts earlier tiers of the same cascade gave (as scored)."""

    customer_text: str
    tier: int = 1
    earlier_drafts: tuple[str, ...] = ()


class Scorer(Protocol):
    def score(self, *, context: ScoringContext, completion: Completion) -> float: ...


def dominant_script(text: str) -> str | None:
    """The writing system most letters of `text` belong to (LATIN, CYRILLIC, CJK, …)."""
    scripts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            scripts[name.split(" ", 1)[0] if name else "UNKNOWN"] += 1
    if not scripts:
        return None
    return scripts.most_common(1)[0][0]


class DefaultScorer:
    def score(self, *, context: ScoringContext, completion: Completion) -> float:
        text = completion.text.strip()
        if not text:
            return 0.0
        value = completion.mean_token_prob
        value = NEUTRAL if value is None else value
        if completion.finish_reason == "length":
            value *= TRUNCATED_FACTOR
        if _REFUSAL.search(text):
            value = min(value, REFUSAL_CAP)
        customer_script = dominant_script(context.customer_text)
        if customer_script is not None and dominant_script(text) != customer_script:
            value = min(value, WRONG_SCRIPT_CAP)
        return max(0.0, min(1.0, value))


# --- The learned scorer -------------------------------------------------------------------------

# The cheap signals appended to the two embeddings, in order. A signal the training rows cannot
# recover (the default score of a draft a learned scorer judged; an earlier tier's text that no
# explanation kept) is given as unknown: a neutral value and its flag at 0.
SIGNALS = (
    "default_score",
    "default_known",
    "tier",
    "log_words",
    "has_earlier",
    "agreement",
    "agreement_known",
)
FEATURES = "customer ⊕ draft embedding; " + ", ".join(SIGNALS)


@dataclass(frozen=True)
class Verdict:
    score: float
    scorer_id: int | None = None  # the TrainedClassifier that judged; None: the default scorer


def signal_row(
    *,
    draft_text: str,
    default_score: float | None,
    tier: int,
    has_earlier: bool,
    agreement: float | None,
) -> list[float]:
    """The cheap signals of one draft, in SIGNALS order."""
    return [
        NEUTRAL if default_score is None else default_score,
        0.0 if default_score is None else 1.0,
        float(tier),
        math.log1p(len(draft_text.split())),
        1.0 if has_earlier else 0.0,
        0.0 if agreement is None else agreement,
        0.0 if agreement is None else 1.0,
    ]


def feature_rows(
    customer: npt.NDArray[np.float32],
    draft: npt.NDArray[np.float32],
    signals: Sequence[list[float]],
) -> npt.NDArray[np.float64]:
    """One feature row per draft: customer embedding, draft embedding, signals."""
    return np.hstack(
        [
            np.atleast_2d(customer).astype(np.float64),
            np.atleast_2d(draft).astype(np.float64),
            np.asarray(signals, dtype=np.float64).reshape(len(signals), len(SIGNALS)),
        ]
    )


class LearnedScorer:
    """g = P(the agent uses the draft or edits it lightly), from one policy's trained model."""

    def __init__(self, *, classifier_id: int, model: TrainedPLR, embedder: Embedder):
        self.classifier_id = classifier_id
        self.model = model
        self.embedder = embedder
        self.fallback = DefaultScorer()

    def score(self, *, context: ScoringContext, completion: Completion) -> float:
        return self.judge(context=context, completion=completion).score

    def judge(self, *, context: ScoringContext, completion: Completion) -> Verdict:
        """Embed the customer turn, the draft and the earlier drafts in one batch and predict;
        the default scorer's verdict when the draft is empty or embedding fails."""
        default = self.fallback.score(context=context, completion=completion)
        if not completion.text.strip():
            return Verdict(default)
        try:
            rows = self._rows(context, [completion.text], default_score=default)
        except EmbeddingError as exc:
            logger.warning(
                "learned scorer %s: embedding failed (%s); default scorer used",
                self.classifier_id,
                exc,
            )
            return Verdict(default)
        return Verdict(float(self.model.positive_proba(rows)[0]), scorer_id=self.classifier_id)

    def explain(self, *, context: ScoringContext, completion: Completion) -> list[dict[str, Any]]:
        """Occlusion weights per word of the draft (weight < 0: the word pulled g down), the
        draft and its one-word-less variants in one embedding batch. Raises EmbeddingError."""
        from drafting.learning.plr import explain_words

        default = self.fallback.score(context=context, completion=completion)

        def score(variants: list[str]) -> npt.NDArray[np.float64]:
            return self.model.positive_proba(self._rows(context, variants, default_score=default))

        _full, words = explain_words(completion.text, score)
        return [{"word": w.word, "start": w.start, "end": w.end, "weight": w.weight} for w in words]

    def _rows(
        self, context: ScoringContext, drafts: list[str], *, default_score: float
    ) -> npt.NDArray[np.float64]:
        earlier = list(context.earlier_drafts)
        vectors = self.embedder.embed([context.customer_text, *earlier, *drafts])
        customer, earlier_vectors = vectors[0], vectors[1 : 1 + len(earlier)]
        draft_vectors = vectors[1 + len(earlier) :]
        signals = [
            signal_row(
                draft_text=text,
                default_score=default_score,
                tier=context.tier,
                has_earlier=bool(earlier),
                agreement=float((earlier_vectors @ vector).max()) if earlier else None,
            )
            for text, vector in zip(drafts, draft_vectors, strict=True)
        ]
        return feature_rows(np.tile(customer, (len(drafts), 1)), draft_vectors, signals)


def judge(scorer: Scorer, *, context: ScoringContext, completion: Completion) -> Verdict:
    """Any scorer's verdict, with the trained model that judged when it was a learned one."""
    if isinstance(scorer, LearnedScorer):
        return scorer.judge(context=context, completion=completion)
    return Verdict(scorer.score(context=context, completion=completion))


def explain(
    scorer: Scorer, verdict: Verdict, *, context: ScoringContext, completion: Completion
) -> list[dict[str, Any]] | None:
    """Why the draft scored as it did, when a learned model judged it (None otherwise, or when
    embedding fails: an explanation is never worth losing the draft)."""
    if not isinstance(scorer, LearnedScorer) or verdict.scorer_id is None:
        return None
    try:
        return scorer.explain(context=context, completion=completion)
    except EmbeddingError as exc:
        logger.warning("learned scorer %s: no explanation (%s)", scorer.classifier_id, exc)
        return None
