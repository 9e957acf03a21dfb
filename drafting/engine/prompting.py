"""Prompt adaptation (FrugalGPT): send each tier only as many tokens as it needs.

The prompt is the system prompt (the policy's, then few-shot examples, then the knowledge
passages), the thread's earlier turns and the customer's last message. When it does not fit the
endpoint's prompt-token budget, what gives way first is what the draft needs least:

1. few-shot examples (drafting.engine.examples), least similar first: they show tone and facts
   agents used for *other* messages, nice to have;
2. knowledge passages (drafting.engine.grounding), lowest-ranked first, down to the best
   KEEP_PASSAGES: the best passages hold the facts the draft must be right about, while the
   lower ones are often near misses;
3. the thread's old turns, oldest first: the recent turns say what the customer is asking now;
4. the remaining passages but the best one, lowest first.

The system prompt, the best passage and the customer's last message always stay, even if they
alone exceed the budget (a draft without them is not worth asking for). Passages keep their
numbers: dropping from the bottom leaves [1]..[k] as numbered in the draft's records, and
`TrimmedPrompt.passages` says how many each tier was shown. They are appended to the system
message after redaction (`TrimmedPrompt.without_passages`, `with_knowledge`): they are the
team's own text (its support address, its prices), not the customer's data.

Tokens are estimated at four characters each (plus a few per message for the chat format):
each provider tokenises differently and none is available offline for every model, and the
budget only needs to be roughly right — the usage the provider reports is what is billed and
recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csbot.models import Message

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators of the chat template
# Passages kept while old turns are dropped (see the module docstring): the best two hold
# the answer in most retrievals that find it.
KEEP_PASSAGES = 2


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    return sum(TOKENS_PER_MESSAGE + len(m["content"]) // CHARS_PER_TOKEN + 1 for m in messages)


@dataclass(frozen=True)
class Example:
    customer: str
    reply: str
    similarity: float


@dataclass(frozen=True)
class TrimmedPrompt:
    messages: list[dict[str, str]]  # what is sent (to a local tier; see without_passages)
    tokens_saved: int
    examples: int = 0
    passages: int = 0  # how many of the passages, best first, fitted
    # The same prompt before the passages were appended to its system message, and the text
    # appended: a paid tier's prompt is redacted without the passages, then given them.
    without_passages: list[dict[str, str]] | None = None
    knowledge: str = ""


def thread_messages(
    *, system_prompt: str, thread: Sequence[tuple[str, str]], history: int
) -> list[dict[str, str]]:
    """The system prompt, then the thread's (direction, text) turns up to the message being
    answered, the newest `history` only, as chat messages (the customer's turns are the user's,
    the agents' the assistant's): the one home of the prompt's shape, for the worker
    (drafting.services) and for the training sets made from sent replies
    (drafting.learning.distill_data), so that an adapter trains on the prompt it is sent."""
    messages = [{"role": "system", "content": system_prompt}]
    for direction, text in thread[-history:]:
        role = "user" if direction == Message.Direction.INBOUND else "assistant"
        messages.append({"role": role, "content": text})
    return messages


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


def knowledge_block(passages: Sequence[str], header: str) -> str:
    """The text appended to the system message: the header, then the passages (already
    numbered, best first); empty without passages."""
    if not passages:
        return ""
    return "\n\n".join([header, *passages])


def with_knowledge(messages: list[dict[str, str]], block: str) -> list[dict[str, str]]:
    """`messages` with `block` appended to the system message (the first)."""
    if not block or not messages:
        return messages
    system = messages[0]
    return [{**system, "content": f"{system['content']}\n\n{block}"}, *messages[1:]]


def trim_to_budget(
    messages: list[dict[str, str]],
    *,
    budget: int,
    examples: Sequence[Example] = (),
    passages: Sequence[str] = (),
    passages_header: str = "",
) -> TrimmedPrompt:
    """Fit the prompt into `budget` estimated tokens, giving way in the order of the module
    docstring: examples (`examples` come best first), passages down to KEEP_PASSAGES
    (`passages` come numbered, best first, shown under `passages_header`), the oldest turns
    between the system prompt (first) and the last message, then passages down to the best
    one. `tokens_saved` is measured against the prompt with every turn, example and passage."""
    head, history, last = messages[:1], list(messages[1:-1]), messages[-1:]
    if len(messages) == 1:
        head, last = messages, []
    kept_examples, kept_passages = list(examples), list(passages)

    def assembled() -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        bare = [with_examples(head[0], kept_examples), *history, *last]
        block = knowledge_block(kept_passages, passages_header)
        return bare, with_knowledge(bare, block), block

    def size() -> int:
        return estimate_tokens(assembled()[1])

    full = size()
    while kept_examples and size() > budget:
        kept_examples.pop()
    while len(kept_passages) > KEEP_PASSAGES and size() > budget:
        kept_passages.pop()
    while history and size() > budget:
        history.pop(0)
    while len(kept_passages) > 1 and size() > budget:
        kept_passages.pop()
    bare, kept, block = assembled()
    return TrimmedPrompt(
        messages=kept,
        tokens_saved=full - estimate_tokens(kept),
        examples=len(kept_examples),
        passages=len(kept_passages),
        without_passages=bare,
        knowledge=block,
    )
