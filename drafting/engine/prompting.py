"""Prompt adaptation (FrugalGPT): send each tier only as many tokens as it needs.

The thread is trimmed to the endpoint's prompt-token budget, oldest turns first; the system
prompt and the customer's last message are always kept. Few-shot examples (drafting.engine.examples)
are appended to the system prompt; they are extras, so when the budget is tight they go
before any turn of the conversation, least similar first. Tokens are estimated at four
characters each (plus a few per message for the chat format): each provider tokenises
differently and none is available offline for every model, and the budget only needs to be
roughly right — the usage the provider reports is what is billed and recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators of the chat template


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    return sum(TOKENS_PER_MESSAGE + len(m["content"]) // CHARS_PER_TOKEN + 1 for m in messages)


@dataclass(frozen=True)
class Example:
    customer: str
    reply: str
    similarity: float


@dataclass(frozen=True)
class TrimmedPrompt:
    messages: list[dict[str, str]]
    tokens_saved: int
    examples: int = 0


def with_examples(system: dict[str, str], examples: Sequence[Example]) -> dict[str, str]:
    if not examples:
        return system
    shown = "\n\n".join(f"Customer: {e.customer}\nAgent: {e.reply}" for e in examples)
    return {
        **system,
        "content": f"{system['content']}\n\n{EXAMPLES_HEADER}\n\n{shown}",
    }


EXAMPLES_HEADER = (
    "Replies our agents sent to similar messages (reuse their facts and tone where they apply; "
    "they are not part of this conversation):"
)


def trim_to_budget(
    messages: list[dict[str, str]], *, budget: int, examples: Sequence[Example] = ()
) -> TrimmedPrompt:
    """Fit the prompt into `budget` estimated tokens: first drop examples (least similar
    first, `examples` come best first), then the oldest turns between the system prompt
    (first) and the last message; those two stay even if they alone exceed the budget.
    `tokens_saved` is measured against the prompt with every turn and example."""
    head, history, last = messages[:1], list(messages[1:-1]), messages[-1:]
    if len(messages) == 1:
        head, last = messages, []
    kept_examples = list(examples)
    full = estimate_tokens([with_examples(head[0], kept_examples), *history, *last])

    def size() -> int:
        return estimate_tokens([with_examples(head[0], kept_examples), *history, *last])

    while kept_examples and size() > budget:
        kept_examples.pop()
    while history and size() > budget:
        history.pop(0)
    kept = [with_examples(head[0], kept_examples), *history, *last]
    return TrimmedPrompt(
        messages=kept, tokens_saved=full - estimate_tokens(kept), examples=len(kept_examples)
    )
