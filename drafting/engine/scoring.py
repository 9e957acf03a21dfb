"""Scorers: g(context, draft) ∈ [0, 1], the cascade's judgement of a draft.

The default scorer needs no training: the model's own confidence (exp of the mean token
logprob, when the server returns logprobs) discounted by cheap checks for drafts an agent
cannot use — empty, cut off at the token limit, a refusal, or in another script than the
customer's message. A turn that needs knowledge (drafting.engine.grounding) answered by a
draft that cites no passage (none was found, or the model did not use them) is discounted by
UNGROUNDED_FACTOR: an uncited answer to "do you ship to Canada?" is likely invented, so a
cheap tier's escalates to the next, which gets the same passages; a turn that needs none (or
was not judged) is scored as before.

A learned scorer (drafting.learning.scorer.LearnedScorer: penalised logistic regression on
embeddings, trained on agent actions) plugs in behind the same `Scorer` protocol, which is all
the cascade knows: `judge` says which trained model judged (`Verdict`) and `explain` why a draft
scored low. The engine never imports learning: which scorer is in force is decided by the
caller (drafting.services) and passed in.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from drafting.engine.grounding import GroundingContext
from drafting.engine.providers import Completion

logger = logging.getLogger(__name__)

# Without logprobs the model's confidence is unknown: neither good nor bad.
NEUTRAL = 0.6
TRUNCATED_FACTOR = 0.6
REFUSAL_CAP = 0.1
WRONG_SCRIPT_CAP = 0.2
# Half: a confident uncited draft (0.9) falls under a typical 0.5 threshold, a neutral one too.
UNGROUNDED_FACTOR = 0.5

_REFUSAL = re.compile(
    r"\b(as an ai( language model)?|i('m| am) (just )?an ai|i can(no|')t (help|assist) with"
    r"|i('m| am) (not able|unable) to (help|assist)|i don't have (the ability|access))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ScoringContext:
    """What the scorer may look at besides the draft: the customer's turn, the draft's tier
    position, the drafts earlier tiers of the same cascade gave (as scored) and, for a
    grounded draft, its passages and citations (None: grounding was not checked)."""

    customer_text: str
    tier: int = 1
    earlier_drafts: tuple[str, ...] = ()
    grounding: GroundingContext | None = None


@dataclass(frozen=True)
class Verdict:
    score: float
    scorer_id: int | None = None  # the TrainedClassifier that judged; None: the default scorer


class Scorer(Protocol):
    def score(self, *, context: ScoringContext, completion: Completion) -> float: ...

    def judge(self, *, context: ScoringContext, completion: Completion) -> Verdict:
        """The score with the trained model that gave it (None: no model, a rule)."""
        ...

    def explain(
        self, *, verdict: Verdict, context: ScoringContext, completion: Completion
    ) -> list[dict[str, Any]] | None:
        """Why the draft scored as it did (words with weights), or None when the scorer cannot
        say; never raises: an explanation is never worth losing the draft."""
        ...


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
        grounding = context.grounding
        if grounding is not None and grounding.needs_knowledge and not grounding.citations:
            value *= UNGROUNDED_FACTOR
        return max(0.0, min(1.0, value))

    def judge(self, *, context: ScoringContext, completion: Completion) -> Verdict:
        return Verdict(self.score(context=context, completion=completion))

    def explain(
        self, *, verdict: Verdict, context: ScoringContext, completion: Completion
    ) -> list[dict[str, Any]] | None:
        return None  # rules, not weights: nothing to show word by word
