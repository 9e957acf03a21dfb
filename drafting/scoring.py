"""Scorers: g(context, draft) ∈ [0, 1], the cascade's judgement of a draft.

The default scorer needs no training: the model's own confidence (exp of the mean token
logprob, when the server returns logprobs) discounted by cheap checks for drafts an agent
cannot use — empty, cut off at the token limit, a refusal, or in another script than the
customer's message. A learned scorer (penalised logistic regression on embeddings, trained on
agent actions) plugs in behind the same `Scorer` protocol.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from drafting.providers import Completion

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
    """What the scorer may look at besides the draft."""

    customer_text: str


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
