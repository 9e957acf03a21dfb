"""Prompt adaptation: the thread trimmed to each tier's token budget, oldest turns first."""

from __future__ import annotations

from csbot.models import Message
from drafting import services as drafting
from drafting.engine.prompting import estimate_tokens, trim_to_budget
from drafting.models import ModelEndpoint
from tests.factories import EndpointFactory, MessageFactory, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

SYSTEM = {"role": "system", "content": "Be helpful."}


def turn(role: str, n: int) -> dict[str, str]:
    return {"role": role, "content": f"message {n} " + "x" * 400}


def test_a_thread_within_budget_is_sent_whole() -> None:
    messages = [SYSTEM, turn("user", 1)]
    assert trim_to_budget(messages, budget=1000).messages == messages


def test_oldest_turns_go_first_and_system_and_last_turn_always_stay() -> None:
    messages = [SYSTEM] + [turn("user" if n % 2 else "assistant", n) for n in range(1, 11)]
    trimmed = trim_to_budget(messages, budget=400)
    assert trimmed.messages[0] == SYSTEM
    assert trimmed.messages[-1] == messages[-1]
    assert trimmed.messages[1:-1] == messages[-len(trimmed.messages) + 1 : -1]  # the newest ones
    assert estimate_tokens(trimmed.messages) <= 400
    assert trimmed.tokens_saved == estimate_tokens(messages) - estimate_tokens(trimmed.messages)
    tiny = trim_to_budget(messages, budget=10)
    assert tiny.messages == [SYSTEM, messages[-1]]


def test_each_tier_gets_the_thread_trimmed_to_its_budget_and_the_saving_is_recorded(
    db: None,
) -> None:
    with openai_stub(Reply(body=chat_completion("Sure."))) as stub:
        endpoint = EndpointFactory.create(
            kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url, prompt_token_budget=300
        )
        setup = make_team("Budget", endpoint=endpoint)
        conversation = ingest(setup, "c", "m-0", "first question " + "y" * 600).message.conversation
        for n in range(6):
            MessageFactory.create(
                conversation=conversation,
                direction=Message.Direction.OUTBOUND if n % 2 == 0 else Message.Direction.INBOUND,
                text=f"turn {n} " + "z" * 300,
            )
        draft = ingest(setup, "c", "m-last", "And the last question?").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk)
    sent = stub.requests[0]["json"]["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1]["content"] == "And the last question?"
    assert all("first question" not in m["content"] for m in sent)  # the oldest turn went first
    assert estimate_tokens(sent) <= 300
    assert draft.attempts.get().prompt_tokens_saved > 0
