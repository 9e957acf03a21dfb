"""Training sets from agent actions (drafting.learning.distill_data, `manage.py distill_export`):
what is an example, the prompt the local tier is sent, scrubbing for good, the split by
conversation, de-duplication, the filters, reproducible bytes, and the command's output."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from csbot.models import Conversation, Message
from drafting.engine.grounding import KNOWLEDGE_HEADER
from drafting.learning.distill_data import (
    FILES,
    MANIFEST,
    DistillDataError,
    ExportFilters,
    TooFewConversations,
    distill_examples,
    read_export,
    write_export,
)
from drafting.models import AgentAction, CascadePolicy, Draft, DraftPassage, Intent, MessageIntent
from tests.csbot.factories import ArticleFactory, ChunkFactory
from tests.factories import (
    AgentActionFactory,
    ConversationFactory,
    DraftFactory,
    MessageFactory,
    PolicyFactory,
    TeamSetup,
    UserFactory,
    make_team,
)

pytestmark = pytest.mark.django_db

DAY = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
# Words that mark a conversation in its texts (no digits: scrubbing leaves them alone).
# fmt: off
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]
# fmt: on
ORDINALS = ["one", "two", "three"]


class Thread:
    """One conversation of `setup`'s team, built turn by turn as the worker and the console
    leave it: the customer's message, its draft (with passages), the agent's reply and action."""

    def __init__(self, setup: TeamSetup, *, customer_ref: str = "Customer") -> None:
        self.setup = setup
        self.conversation: Conversation = ConversationFactory.create(
            channel=setup.channel, customer_ref=customer_ref
        )

    def turn(
        self,
        question: str,
        *,
        draft: str,
        final: str | None = None,
        kind: str = AgentAction.Kind.USE,
        acted_at: datetime = DAY,
        passages: tuple[tuple[str, str, str], ...] = (),
        policy: CascadePolicy | None = None,
        agent: Any = None,
    ) -> AgentAction:
        inbound = MessageFactory.create(conversation=self.conversation, text=question)
        status = Draft.Status.READY if kind != AgentAction.Kind.NONE else Draft.Status.HELD_OUT
        row = DraftFactory.create(
            message=inbound,
            policy=policy or self.setup.policy,
            status=status,
            text=draft if kind != AgentAction.Kind.NONE else "",
            ready_at=acted_at if status == Draft.Status.READY else None,
        )
        for number, (title, heading, text) in enumerate(passages, start=1):
            chunk = ChunkFactory.create(
                article=ArticleFactory.create(team=self.setup.team, title=title, body=text),
                heading=heading,
            )
            DraftPassage.objects.create(
                draft=row,
                number=number,
                chunk=chunk,
                article=chunk.article,
                article_version=1,
                text=text,
                score=1.0 / number,
                vector_similarity=0.8,
            )
        final = draft if final is None else final
        return AgentActionFactory.create(
            draft=row,
            kind=kind,
            final_text=final,
            edit_distance=Decimal("0") if kind == AgentAction.Kind.USE else Decimal("0.4"),
            agent=agent or self.setup.agent,
            shown_at=acted_at - timedelta(seconds=30),
            acted_at=acted_at,
        )


@pytest.fixture
def acme() -> TeamSetup:
    return make_team("Acme")


def _conversations(setup: TeamSetup, count: int, *, turns: int = 1) -> None:
    """`count` conversations of `turns` used drafts each, marked by WORDS[i]."""
    for i in range(count):
        thread = Thread(setup)
        for t in range(turns):
            thread.turn(
                f"Question {ORDINALS[t]} about {WORDS[i]}?",
                draft=f"Answer {ORDINALS[t]} about {WORDS[i]}.",
                acted_at=DAY + timedelta(minutes=i * 10 + t),
            )


def _filters(setup: TeamSetup, **overrides: Any) -> ExportFilters:
    values: dict[str, Any] = {"team_id": setup.team.pk, "min_conversations": 1}
    values.update(overrides)
    return ExportFilters(**values)


def _text(transcripts: list[list[dict[str, str]]]) -> str:
    return json.dumps(transcripts)


def test_used_and_edited_drafts_are_examples_ignored_and_unaided_replies_are_not(
    acme: TeamSetup,
) -> None:
    Thread(acme).turn("Where is alpha?", draft="Alpha ships today.")
    Thread(acme).turn(
        "Where is bravo?",
        draft="Bravo ships soon.",
        final="Bravo ships tomorrow morning.",
        kind=AgentAction.Kind.EDIT,
    )
    Thread(acme).turn(
        "Where is charlie?",
        draft="Charlie is lost.",
        final="Charlie reply written by hand.",
        kind=AgentAction.Kind.IGNORE,
    )
    Thread(acme).turn(
        "Where is delta?", draft="", final="Delta reply, no draft.", kind=AgentAction.Kind.NONE
    )

    export = distill_examples(_filters(acme, validation_share=0.0))

    replies = [t[-1] for t in export.train]
    assert replies == [
        {"role": "assistant", "content": "Alpha ships today."},
        {"role": "assistant", "content": "Bravo ships tomorrow morning."},
    ]
    assert export.validation == [] and export.pairs_validation == []
    # The edited draft, and only it, is a preference pair: the agent's text over the draft's.
    assert export.pairs_train == [
        {
            "input": {"messages": export.train[1][:-1]},
            "preferred_output": [{"role": "assistant", "content": "Bravo ships tomorrow morning."}],
            "non_preferred_output": [{"role": "assistant", "content": "Bravo ships soon."}],
        }
    ]
    everything = _text(export.train)
    assert "charlie" not in everything.lower() and "delta" not in everything.lower()
    assert export.counts()["n_conversations"] == 2


def test_the_prompt_is_the_local_tiers_system_prompt_passages_and_thread(acme: TeamSetup) -> None:
    thread = Thread(acme)
    thread.turn("Hello there", draft="Hello! How can I help?", acted_at=DAY)
    thread.turn(
        "How long does a refund take?",
        draft="Refunds take five days [1].",
        final="Refunds take five working days.",
        kind=AgentAction.Kind.EDIT,
        acted_at=DAY + timedelta(minutes=5),
        passages=(
            ("Refunds", "Timing", "Refunds arrive within five working days."),
            ("Refunds", "", "Refunds go back to the card that paid."),
        ),
    )

    export = distill_examples(_filters(acme, validation_share=0.0))

    assert len(export.train) == 2
    system = (
        f"{acme.policy.system_prompt}\n\n{KNOWLEDGE_HEADER}\n\n"
        "[1] Refunds — Timing: Refunds arrive within five working days.\n\n"
        "[2] Refunds: Refunds go back to the card that paid."
    )
    assert export.train[1] == [
        {"role": "system", "content": system},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "How long does a refund take?"},
        {"role": "assistant", "content": "Refunds take five working days."},
    ]
    # The first turn had no passages: the policy's system prompt alone.
    assert export.train[0][0] == {"role": "system", "content": acme.policy.system_prompt}


def test_the_thread_keeps_the_newest_history_turns(acme: TeamSetup, settings: Any) -> None:
    settings.DRAFT_HISTORY_MESSAGES = 2
    thread = Thread(acme)
    thread.turn("First alpha", draft="Reply alpha.")
    thread.turn("Second bravo", draft="Reply bravo.", acted_at=DAY + timedelta(minutes=1))

    export = distill_examples(_filters(acme, validation_share=0.0))

    assert [m["content"] for m in export.train[1][1:]] == [
        "Reply alpha.",
        "Second bravo",
        "Reply bravo.",
    ]


# Every kind drafting.engine.pii knows: EMAIL, PHONE, CARD, IBAN, and NAME, NUMBER, ADDRESS.
PLANTED = {
    "EMAIL": ["dana.whitfield@example.com", "billing@shop.example"],
    "PHONE": ["+44 20 7946 0958", "020 7946 0000"],
    "CARD": ["4111 1111 1111 1111", "4111111111111111"],
    "IBAN": ["GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"],
    "NAME": ["Dana", "Whitfield", "Alex", "Morgan"],
    "NUMBER": ["88231"],
    "ADDRESS": ["12 Baker Street", "NW1 6XE", "5 High Street"],
}


def test_personal_data_is_scrubbed_from_every_exported_file(
    acme: TeamSetup, tmp_path: Path
) -> None:
    agent = UserFactory.create(username="amorgan", first_name="Alex", last_name="Morgan")
    thread = Thread(acme, customer_ref="Dana Whitfield")
    thread.turn(
        "Hi, I'm Dana Whitfield. My card 4111 1111 1111 1111 was charged twice for order 88231. "
        "Email dana.whitfield@example.com or call +44 20 7946 0958. IBAN GB82 WEST 1234 5698 "
        "7654 32. I live at 12 Baker Street, London NW1 6XE.",
        draft="Hi Dana, we refund order 88231 to card 4111111111111111. {agent_name}",
        final="Hi Dana, order 88231 is refunded to GB82WEST12345698765432; we wrote to "
        "dana.whitfield@example.com and will post to 12 Baker Street. Best, Alex Morgan",
        kind=AgentAction.Kind.EDIT,
        agent=agent,
        passages=(
            (
                "Billing",
                "Contact",
                "Write to billing@shop.example or phone 020 7946 0000; our office is at "
                "5 High Street.",
            ),
        ),
    )
    # Another customer who greets the agent by name: a greeting introduces a name.
    Thread(acme).turn("Hello Alex, me again.", draft="Hi Dana, welcome back.")

    export = distill_examples(_filters(acme, validation_share=0.0))
    write_export(export, tmp_path)

    assert export.pairs_train, "the edited draft is a preference pair"
    for name in (*FILES, MANIFEST):
        content = (tmp_path / name).read_text(encoding="utf-8")
        for kind, values in PLANTED.items():
            for value in values:
                assert value not in content, f"{kind} {value!r} in {name}"
    exported = (tmp_path / "train.jsonl").read_text(encoding="utf-8")
    for placeholder in ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[NAME]", "[NUMBER]"):
        assert placeholder in exported
    assert "[ADDRESS]" in exported
    # What is not personal stays: the shape and the words of the reply.
    assert "is refunded to [IBAN]" in exported


def test_train_and_validation_are_split_by_conversation(acme: TeamSetup) -> None:
    _conversations(acme, 12, turns=3)

    export = distill_examples(_filters(acme, validation_share=0.3, seed=7))

    def marks(transcripts: list[list[dict[str, str]]]) -> list[set[str]]:
        return [{w for w in WORDS if f" {w}" in _text([t])} for t in transcripts]

    train, validation = marks(export.train), marks(export.validation)
    assert all(len(m) == 1 for m in train + validation)
    train_words, validation_words = set().union(*train), set().union(*validation)
    assert train_words and validation_words
    assert not train_words & validation_words  # no conversation on both sides
    assert len(export.train) == 3 * len(train_words)  # every turn of a conversation together
    assert len(export.validation) == 3 * len(validation_words)
    assert export.n_conversations == (len(train_words), len(validation_words))
    # Other seeds draw other splits of the same conversations (all five the same as this one:
    # about once in 10^14 runs).
    others = [
        set().union(
            *marks(distill_examples(_filters(acme, validation_share=0.3, seed=s)).validation)
        )
        for s in range(8, 13)
    ]
    assert any(words != validation_words for words in others)


def test_a_tiny_export_still_has_a_validation_conversation(acme: TeamSetup) -> None:
    _conversations(acme, 2)

    export = distill_examples(_filters(acme, validation_share=0.01))

    assert export.n_conversations == (1, 1)


def test_the_same_prompt_and_reply_is_one_example(acme: TeamSetup) -> None:
    for minutes in (0, 5):
        Thread(acme).turn(
            "What are your opening hours?",
            draft="We are open nine to five.",
            acted_at=DAY + timedelta(minutes=minutes),
        )
    Thread(acme).turn("Do you ship abroad?", draft="Yes, we ship worldwide.")

    export = distill_examples(_filters(acme, validation_share=0.0))

    assert len(export.train) == 2
    assert export.counts()["n_duplicates"] == 1
    assert export.counts()["n_conversations"] == 2


def test_filters_by_intent_policy_and_days(acme: TeamSetup) -> None:
    refunds = Intent.objects.create(team=acme.team, name="refund")
    other = PolicyFactory.create(team=acme.team, active=False)
    confident = Thread(acme).turn("Refund alpha", draft="Alpha.", acted_at=DAY)
    unsure = Thread(acme).turn("Refund bravo", draft="Bravo.", acted_at=DAY)
    MessageIntent.objects.create(
        message=confident.inbound_message, intent=refunds, confidence=Decimal("0.97")
    )
    MessageIntent.objects.create(
        message=unsure.inbound_message, intent=refunds, confidence=Decimal("0.30")
    )
    Thread(acme).turn("Charlie", draft="Charlie.", acted_at=DAY + timedelta(days=1), policy=other)
    Thread(acme).turn("Delta", draft="Delta.", acted_at=DAY + timedelta(days=3))

    def words(**filters: Any) -> set[str]:
        export = distill_examples(_filters(acme, validation_share=0.0, **filters))
        return {t[-1]["content"].rstrip(".") for t in export.train}

    assert words() == {"Alpha", "Bravo", "Charlie", "Delta"}
    assert words(intent="refund") == {"Alpha"}
    assert words(policy_id=other.pk) == {"Charlie"}
    assert words(since=date(2025, 3, 11)) == {"Charlie", "Delta"}
    assert words(until=date(2025, 3, 11)) == {"Alpha", "Bravo", "Charlie"}
    assert words(since=date(2025, 3, 11), until=date(2025, 3, 11)) == {"Charlie"}


def test_another_teams_replies_are_never_exported(acme: TeamSetup) -> None:
    _conversations(acme, 2)
    globex = make_team("Globex")
    Thread(globex).turn("Globex secret question", draft="Globex secret answer.")
    # Even a Globex draft made under Acme's policy by mistake stays out of Acme's export.
    Thread(globex).turn("Globex stray question", draft="Globex stray answer.", policy=acme.policy)

    export = distill_examples(_filters(acme, validation_share=0.0))

    assert len(export.train) == 2
    assert "Globex" not in _text(export.train)
    with pytest.raises(TooFewConversations):
        distill_examples(_filters(globex, min_conversations=2))


def test_too_few_conversations_is_an_error_saying_how_many(acme: TeamSetup) -> None:
    _conversations(acme, 3, turns=2)

    with pytest.raises(TooFewConversations, match=r"only 3 conversations .* at least 20"):
        distill_examples(ExportFilters(team_id=acme.team.pk))


def test_bad_filters_are_refused() -> None:
    with pytest.raises(DistillDataError, match="after"):
        ExportFilters(team_id=1, since=date(2025, 3, 2), until=date(2025, 3, 1))
    with pytest.raises(DistillDataError, match="share"):
        ExportFilters(team_id=1, validation_share=1.0)


def test_the_same_rows_give_the_same_bytes(acme: TeamSetup, tmp_path: Path) -> None:
    _conversations(acme, 8, turns=2)
    Thread(acme).turn(
        "Can I change ümlaut?", draft="Soon.", final="Yes — today.", kind=AgentAction.Kind.EDIT
    )
    filters = _filters(acme, validation_share=0.25)

    first = write_export(distill_examples(filters), tmp_path / "a")
    second = write_export(distill_examples(filters), tmp_path / "b")

    assert first == second
    for name in (*FILES, MANIFEST):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "ümlaut" in (tmp_path / "a" / "train.jsonl").read_text(encoding="utf-8") + (
        tmp_path / "a" / "validation.jsonl"
    ).read_text(encoding="utf-8")
    # One more reply changes the data and its hash.
    Thread(acme).turn("A new question", draft="A new answer.")
    assert distill_examples(filters).data_sha256() != first["data_sha256"]


def test_an_export_reads_back_as_written_and_refuses_a_changed_file(
    acme: TeamSetup, tmp_path: Path
) -> None:
    _conversations(acme, 5)
    Thread(acme).turn("Edit me", draft="Draft text.", final="Sent text.", kind="edit")
    export = distill_examples(_filters(acme, validation_share=0.3))
    manifest = write_export(export, tmp_path)

    again = read_export(tmp_path)

    assert again.train == export.train and again.validation == export.validation
    assert (
        again.pairs_train + again.pairs_validation == export.pairs_train + export.pairs_validation
    )
    assert again.filters == export.filters and again.counts() == export.counts()
    assert again.data_sha256() == manifest["data_sha256"]
    lines = (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(set(json.loads(line)) == {"messages"} for line in lines)
    (tmp_path / "train.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n", encoding="utf-8")
    with pytest.raises(DistillDataError, match=r"train.jsonl changed"):
        read_export(tmp_path)
    with pytest.raises(DistillDataError, match="not an export"):
        read_export(tmp_path / "missing")


def _command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("distill_export", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_writes_the_export_and_says_its_counts_and_hash(
    acme: TeamSetup, tmp_path: Path
) -> None:
    _conversations(acme, 6)

    out, err = _command("--team", "Acme", "--out", str(tmp_path), "--min-conversations", "5")

    manifest = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert "6 sent replies" in err and "6 examples from 6 conversations" in err
    assert f"data sha256: {manifest['data_sha256']}" in out
    counts = manifest["counts"]
    assert f"train: {counts['n_train']} examples" in out
    assert counts["n_train"] + counts["n_validation"] == 6

    out, _ = _command(
        "--team", str(acme.team.pk), "--out", str(tmp_path / "j"), "--json",
        "--min-conversations", "5", "--since", "2025-03-10", "--until", "2025-03-10",
    )  # fmt: skip
    reported = json.loads(out)
    assert reported["data_sha256"] == manifest["data_sha256"]
    assert reported["filters"]["since"] == "2025-03-10"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "Nobody"], "no team"),
        (["--team", "Acme", "--since", "10/03/2025"], "not a date"),
        (["--team", "Acme", "--since", "2025-03-11", "--until", "2025-03-10"], "after"),
        (["--team", "Acme", "--intent", "unknown"], "no intent named 'unknown'"),
        (["--team", "Acme", "--policy", "999999"], "no policy with the id 999999"),
        (["--team", "Acme", "--validation-share", "1.5"], "share"),
        (["--team", "Acme"], "only 2 conversations"),
    ],
)
def test_the_command_refuses_bad_input_saying_why(
    acme: TeamSetup, tmp_path: Path, args: list[str], message: str
) -> None:
    _conversations(acme, 2)

    with pytest.raises(CommandError, match=message):
        _command(*args, "--out", str(tmp_path))

    assert not (tmp_path / MANIFEST).exists()


def test_the_command_refuses_another_teams_policy(acme: TeamSetup, tmp_path: Path) -> None:
    globex = make_team("Globex")

    with pytest.raises(CommandError, match="has no policy"):
        _command("--team", "Acme", "--policy", str(globex.policy.pk), "--out", str(tmp_path))


def test_messages_of_the_thread_after_the_answered_one_are_not_in_its_prompt(
    acme: TeamSetup,
) -> None:
    thread = Thread(acme)
    thread.turn("Where is alpha?", draft="Alpha ships today.")
    MessageFactory.create(conversation=thread.conversation, text="Later bravo message")
    assert Message.objects.filter(conversation=thread.conversation).count() == 3

    export = distill_examples(_filters(acme, validation_share=0.0))

    assert "bravo" not in _text(export.train)
