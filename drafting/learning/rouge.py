"""ROUGE-L between two replies: the one home of the text-overlap figure every part of csbot
reports (the DSTC11 scores, the trainer's validation, the adapter comparison).

It lives in learning, below evaluation in drafting's layers, so that the trainer and the
shadow comparison (learning) and the offline evaluation (evaluation) all use the same one.
"""

from __future__ import annotations

import re

_TOKENS = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKENS.findall(text.lower())


def rouge_l(reference: str, hypothesis: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of tokens over both lengths."""
    ref, hyp = _tokens(reference), _tokens(hypothesis)
    if not ref or not hyp:
        return 0.0
    # One row of the LCS table at a time: the texts are replies, a few dozen tokens.
    previous = [0] * (len(hyp) + 1)
    for token in ref:
        current = [0] * (len(hyp) + 1)
        for j, other in enumerate(hyp, start=1):
            current[j] = previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)
