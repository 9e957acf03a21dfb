"""Builders of the console's knowledge tests: the team's articles and macros, and a ready draft
as the worker leaves it when it is grounded (passages, the attempt's citations) or a macro
offer, made from rows directly (no worker, no model)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import factory
from django.utils import timezone

from csbot.models import Message
from drafting.models import (
    Draft,
    DraftAttempt,
    DraftPassage,
    KnowledgeArticle,
    KnowledgeChunk,
    Macro,
)
from tests.factories import (
    ConversationFactory,
    DraftAttemptFactory,
    DraftFactory,
    MessageFactory,
    TeamFactory,
    TeamSetup,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ArticleFactory(factory.django.DjangoModelFactory[KnowledgeArticle]):
    class Meta:
        model = KnowledgeArticle

    team = factory.SubFactory(TeamFactory)
    external_id = factory.Sequence(lambda n: f"article-{n}")
    title = factory.Sequence(lambda n: f"Article {n}")
    body = "Our help article."
    source_url = factory.Sequence(lambda n: f"https://help.example.com/articles/{n}")
    content_hash = factory.LazyAttribute(lambda a: _sha(a.body))


class ChunkFactory(factory.django.DjangoModelFactory[KnowledgeChunk]):
    class Meta:
        model = KnowledgeChunk

    article = factory.SubFactory(ArticleFactory)
    team = factory.SelfAttribute("article.team")
    position = factory.Sequence(lambda n: n)
    text = factory.SelfAttribute("article.body")
    content_hash = factory.LazyAttribute(lambda c: _sha(c.heading + c.text))


class MacroFactory(factory.django.DjangoModelFactory[Macro]):
    class Meta:
        model = Macro

    team = factory.SubFactory(TeamFactory)
    external_id = factory.Sequence(lambda n: f"macro-{n}")
    title = factory.Sequence(lambda n: f"Macro {n}")
    body = "Hello {customer_name}, this is {agent_name}."
    content_hash = factory.LazyAttribute(lambda m: _sha(m.body))


@dataclass(frozen=True)
class Given:
    """A passage a draft's prompt held: from `article` (its chunk under `heading`)."""

    article: KnowledgeArticle
    text: str
    cited: bool = False
    heading: str = ""


@dataclass
class ConsoleDraft:
    draft: Draft
    message: Message
    attempt: DraftAttempt
    passages: list[DraftPassage] = field(default_factory=list)


def ready_draft(
    setup: TeamSetup,
    *,
    text: str,
    customer_text: str = "Can I return my shoes?",
    customer_ref: str = "Dana",
    passages: tuple[Given, ...] = (),
    shown: int | None = None,
    knowledge: str = "",
    knowledge_note: str = "",
    macro: Macro | None = None,
) -> ConsoleDraft:
    """A conversation of `setup`'s team waiting on `customer_text`, with a ready draft as the
    worker leaves it: one ok attempt (the macro's at tier 0 and no cost, else tier 1 on the
    team's endpoint) whose prompt held the first `shown` passages (all by default) and cited
    those marked `cited`; the passages numbered 1… in the order given."""
    now = timezone.now()
    conversation = ConversationFactory.create(
        channel=setup.channel, customer_ref=customer_ref, awaiting_reply_since=now
    )
    message = MessageFactory.create(conversation=conversation, text=customer_text, author="")
    draft = DraftFactory.create(
        message=message,
        policy=setup.policy,
        status=Draft.Status.READY,
        text=text,
        ready_at=now,
        final_endpoint=None if macro is not None else setup.endpoint,
        knowledge=knowledge,
        knowledge_note=knowledge_note,
    )
    cited = [n for n, p in enumerate(passages, start=1) if p.cited]
    attempt_fields: dict[str, Any] = (
        {"tier": 0, "endpoint": None, "macro": macro, "model_name": ""}
        if macro is not None
        else {"tier": 1, "endpoint": setup.endpoint}
    )
    attempt = DraftAttemptFactory.create(
        draft=draft,
        passages_shown=len(passages) if shown is None else shown,
        citations=cited,
        **attempt_fields,
    )
    rows = []
    for number, given in enumerate(passages, start=1):
        chunk = ChunkFactory.create(article=given.article, heading=given.heading, text=given.text)
        rows.append(
            DraftPassage.objects.create(
                draft=draft,
                number=number,
                chunk=chunk,
                article=given.article,
                article_version=given.article.version,
                text=given.text,
                score=1.0 / number,
                cited=given.cited,
            )
        )
    return ConsoleDraft(draft=draft, message=message, attempt=attempt, passages=rows)
