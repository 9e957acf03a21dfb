"""Prompt adaptation (FrugalGPT): send each tier only as many tokens as it needs.

The thread is trimmed to the endpoint's prompt-token budget, oldest turns first; the system
prompt and the customer's last message are always kept. Tokens are estimated at four
characters each (plus a few per message for the chat format): each provider tokenises
differently and none is available offline for every model, and the budget only needs to be
roughly right — the usage the provider reports is what is billed and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators of the chat template


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    return sum(TOKENS_PER_MESSAGE + len(m["content"]) // CHARS_PER_TOKEN + 1 for m in messages)


@dataclass(frozen=True)
class TrimmedPrompt:
    messages: list[dict[str, str]]
    tokens_saved: int


def trim_to_budget(messages: list[dict[str, str]], *, budget: int) -> TrimmedPrompt:
    """Drop the oldest turns between the system prompt (first) and the last message until the
    estimate fits `budget`; the first and last messages stay even if they alone exceed it."""
    if len(messages) <= 2 or estimate_tokens(messages) <= budget:
        return TrimmedPrompt(messages=messages, tokens_saved=0)
    head, history, last = messages[:1], list(messages[1:-1]), messages[-1:]
    while history and estimate_tokens(head + history + last) > budget:
        history.pop(0)
    kept = head + history + last
    return TrimmedPrompt(
        messages=kept, tokens_saved=estimate_tokens(messages) - estimate_tokens(kept)
    )
