"""Drafting reads the support domain and accounting use (never its internals directly)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from csbot import memo
from csbot.memo import Memo
from csbot.models import Message, Team
from drafting.engine import macros as macro_engine
from drafting.models import (
    AgentAction,
    CachedReply,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    DraftPassage,
    Intent,
    IntentExample,
    KnowledgeArticle,
    Macro,
    MessageIntent,
    ModelEndpoint,
)

# Read on every message (the team's active policy) or every draft (a policy's tiers), changed
# now and then in the admin: each process remembers its answers, "none" included, for a few
# seconds (csbot.memo: a save or delete through the ORM is seen at once by the process that
# made it, by the others, and after a bulk `.update()`, within the seconds).
ACTIVE_POLICY_SECONDS = memo.SECONDS
_active_policies: Memo[int, CascadePolicy | None] = Memo(depends_on=(CascadePolicy,))
_enabled_tiers: Memo[int, list[CascadeTier]] = Memo(
    depends_on=(CascadePolicy, CascadeTier, ModelEndpoint)
)


def active_policy(*, team_id: int) -> CascadePolicy | None:
    """The team's one active policy (None: the team gets no drafts), at most
    ACTIVE_POLICY_SECONDS old. The instance is shared: read it, never change it."""
    return _active_policies.get(
        team_id, lambda: CascadePolicy.objects.filter(team_id=team_id, active=True).first()
    )


def enabled_tiers(*, policy_id: int) -> list[CascadeTier]:
    """The policy's tiers whose endpoint is enabled, in order, with their endpoints, at most
    ACTIVE_POLICY_SECONDS old. Shared between the threads of a process: read them, never
    change them."""
    return _enabled_tiers.get(
        policy_id,
        lambda: list(
            CascadeTier.objects.select_related("endpoint")
            .filter(policy_id=policy_id, endpoint__enabled=True)
            .order_by("position")
        ),
    )


def draft_as_shown(draft: Draft) -> Draft:
    """The draft as an agent (console or integration) may have it: a withheld draft
    (drafting.decisions) keeps its text in the row, for the record, but is never shown, so its
    instance here has none. The instance is for reading: never save it."""
    if draft.status == Draft.Status.WITHHELD:
        draft.text = ""
    return draft


def live_draft_for_message(*, message_id: int) -> Draft | None:
    """The message's live draft as the agent may have it (`draft_as_shown`)."""
    draft = (
        Draft.objects.live().select_related("final_endpoint").filter(message_id=message_id).first()
    )
    return draft_as_shown(draft) if draft is not None else None


def live_drafts_for_messages(*, message_ids: Iterable[int]) -> dict[int, Draft]:
    """Live drafts keyed by inbound message id, as the agent may have them (`draft_as_shown`):
    one query, whatever the thread length."""
    drafts = Draft.objects.live().filter(message_id__in=list(message_ids)).select_related("action")
    return {draft.message_id: draft_as_shown(draft) for draft in drafts}


def latest_draft_status(conversation_ref: OuterRef) -> Subquery:
    """Status of a conversation's newest live draft, for annotating conversation querysets."""
    return Subquery(
        Draft.objects.live()
        .filter(message__conversation_id=conversation_ref)
        .order_by("-id")
        .values("status")[:1]
    )


def latest_inbound_intent_name(conversation_ref: OuterRef) -> Subquery:
    """The intent name of a conversation's newest customer message (the classifier's verdict,
    or an agent's label, which replaces it), for annotating conversation querysets; None while
    that message has no verdict."""
    return Subquery(
        MessageIntent.objects.filter(
            message_id=Subquery(
                # One level deeper than the caller's reference: OuterRef of it.
                Message.objects.filter(
                    conversation_id=OuterRef(conversation_ref),
                    direction=Message.Direction.INBOUND,
                )
                .order_by("-id")
                .values("id")[:1]
            )
        ).values("intent__name")[:1]
    )


def intent_names(*, team_id: int) -> list[str]:
    """The team's intent names, for choosing one (the console queue's filter)."""
    return list(
        Intent.objects.filter(team_id=team_id).order_by("name").values_list("name", flat=True)
    )


def action_for_reply(*, inbound_message_id: int | None, draft_id: int | None) -> AgentAction | None:
    """The action already recorded for this inbound message or draft (a duplicate submission)."""
    queryset = AgentAction.objects.select_related("outbound_message")
    if inbound_message_id is not None:
        action = queryset.filter(inbound_message_id=inbound_message_id).first()
        if action is not None:
            return action
    if draft_id is not None:
        return queryset.filter(draft_id=draft_id).first()
    return None


def draft_of_message(*, draft_id: int, message_id: int) -> Draft | None:
    """The draft with this id if it answers this message (whatever its status now), as the
    agent may have it (`draft_as_shown`)."""
    draft = Draft.objects.filter(pk=draft_id, message_id=message_id).first()
    return draft_as_shown(draft) if draft is not None else None


def drafts_for_team(*, team_id: int) -> QuerySet[Draft]:
    return Draft.objects.filter(message__conversation__team_id=team_id).select_related(
        "message", "final_endpoint"
    )


def cached_replies_with_hits() -> QuerySet[CachedReply]:
    """Cached replies with `hits`: cache-hit attempts that reused the entry since it was
    (re)stored."""
    hits = (
        DraftAttempt.objects.filter(
            cache_hit=True,
            cache_source_id=OuterRef("source_draft_id"),
            started_at__gte=OuterRef("created_at"),
        )
        .order_by()
        .values("cache_source_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return CachedReply.objects.annotate(
        hits=Coalesce(Subquery(hits, output_field=IntegerField()), Value(0))
    )


# --- Why a draft was escalated (console, admin) ----------------------------------------------------------


@dataclass(frozen=True)
class ExplainedWord:
    word: str
    weight: float
    strength: float  # |weight| relative to the draft's largest, 0…1: how strongly to highlight
    gap: str  # the whitespace before the word

    @property
    def negative(self) -> bool:
        return self.weight < 0


@dataclass(frozen=True)
class Escalation:
    tier: int
    endpoint: str
    score: Decimal | None
    threshold: Decimal | None
    scorer: str
    words: list[ExplainedWord]


def explained_words(explanation: list[dict[str, Any]]) -> list[ExplainedWord]:
    largest = max((abs(float(w["weight"])) for w in explanation), default=0.0) or 1.0
    words, end = [], 0
    for w in explanation:
        weight = float(w["weight"])
        words.append(
            ExplainedWord(
                word=str(w["word"]),
                weight=weight,
                strength=round(abs(weight) / largest, 2),
                gap=" " if int(w["start"]) > end else "",
            )
        )
        end = int(w["end"])
    return words


def draft_escalations(*, draft: Draft | None) -> list[Escalation]:
    """The draft's escalated attempts that carry an explanation, in tier order, with the
    threshold their tier has now. One query."""
    if draft is None or draft.status != Draft.Status.READY:
        return []
    threshold = CascadeTier.objects.filter(
        policy_id=draft.policy_id, position=OuterRef("tier")
    ).values("threshold")[:1]
    attempts = (
        DraftAttempt.objects.filter(
            draft_id=draft.pk,
            explanation__isnull=False,
            exploratory=False,
            purpose=DraftAttempt.Purpose.DRAFT,  # a composer rewrite is no escalation
        )
        .select_related("endpoint", "scorer")
        .annotate(tier_threshold=Subquery(threshold))
        .order_by("tier", "started_at", "id")
    )
    return [
        Escalation(
            tier=a.tier,
            endpoint=a.endpoint.name if a.endpoint else "cache",
            score=a.score,
            threshold=a.tier_threshold,
            scorer=str(a.scorer) if a.scorer else "default scorer",
            words=explained_words(a.explanation or []),
        )
        for a in attempts
    ]


# --- The console's intent box -------------------------------------------------------------


@dataclass(frozen=True)
class IntentPanel:
    """The console's intent box for one inbound message."""

    message: Message | None
    intents: list[Intent]
    verdict: MessageIntent | None
    label: IntentExample | None


def intent_panel(*, team: Team, message: Message | None) -> IntentPanel:
    intents = list(Intent.objects.filter(team=team).order_by("name"))
    if message is None:
        return IntentPanel(message=None, intents=intents, verdict=None, label=None)
    verdict = (
        MessageIntent.objects.select_related("intent", "classifier")
        .filter(message=message, intent__team=team)
        .first()
    )
    label = (
        IntentExample.objects.select_related("intent", "labelled_by")
        .filter(message=message, intent__team=team)
        .order_by("-created_at", "-id")
        .first()
    )
    return IntentPanel(message=message, intents=intents, verdict=verdict, label=label)


# --- The console's knowledge: a draft's sources, placeholders, macros and articles to insert ---
#
# Placeholders (drafting.engine.macros): the worker fills `{customer_name}` when it makes a draft;
# `{agent_name}` stays in the stored draft text literally, because who answers is only known
# when an agent opens it: the console fills it for display, and what the agent did is measured
# against that filled text (drafting.services.action_record signs it with the same rule).


def agent_display_name(user: User) -> str:
    """How an agent signs a reply ({agent_name}): their full name, else their user name."""
    return user.get_full_name().strip() or user.get_username()


def draft_text_for_agent(*, text: str, agent_name: str) -> str:
    """The draft text as the agent `agent_name` sees it (and sends it when used as is)."""
    return text.replace(macro_engine.AGENT_NAME, agent_name)


def macro_text_for(*, macro: Macro, customer_ref: str, agent_name: str) -> str:
    """A macro's body as the console inserts it: `{customer_name}` filled as the worker fills
    a macro offer (macros.fill), `{agent_name}` with the agent's name, other placeholders left
    for the agent to fill by hand."""
    filled = macro_engine.fill(macro.body, name=macro_engine.customer_name(customer_ref))
    return draft_text_for_agent(text=filled, agent_name=agent_name)


# Words too common to show as shared between a draft and a passage.
# fmt: off
_COMMON_WORDS = frozenset({
    "about", "also", "been", "before", "could", "does", "from", "have", "here", "into", "just",
    "more", "only", "over", "some", "such", "than", "that", "their", "them", "then", "there",
    "these", "they", "this", "very", "were", "what", "when", "which", "will", "with", "within",
    "would", "your",
})
# fmt: on
_WORD = re.compile(r"(\w+)")


def _content_words(text: str) -> set[str]:
    return {
        w for w in (m.lower() for m in _WORD.findall(text)) if len(w) > 3 and w not in _COMMON_WORDS
    }


def shared_word_segments(passage: str, draft_text: str) -> tuple[tuple[str, bool], ...]:
    """The passage cut into (piece, shared) segments, where `shared` marks a content word the
    draft uses too: what the console highlights so the agent sees what backs the draft."""
    drafted = _content_words(draft_text)
    pieces = [p for p in _WORD.split(passage) if p]
    marks = [p.lower() in drafted for p in pieces]
    for i in range(1, len(pieces) - 1):  # "unworn shoes": one highlight, not two
        if marks[i - 1] and marks[i + 1] and pieces[i].isspace() and "\n" not in pieces[i]:
            marks[i] = True
    segments: list[tuple[str, bool]] = []
    for piece, shared in zip(pieces, marks, strict=True):
        if segments and segments[-1][1] == shared:
            segments[-1] = (segments[-1][0] + piece, shared)
        else:
            segments.append((piece, shared))
    return tuple(segments)


@dataclass(frozen=True)
class Source:
    """A passage a draft was given, as the console shows it."""

    number: int
    article_id: int | None  # None: the article was deleted since
    title: str
    url: str  # the article's public source URL, "" when it has none
    heading: str
    text: str  # the passage as the model saw it
    segments: tuple[tuple[str, bool], ...]
    cited: bool
    version: int  # the article's version the passage came from
    current_version: int | None  # its version now (None: deleted)
    published: bool

    @property
    def stale(self) -> bool:
        """The article changed (or was deleted or unpublished) since the draft was written."""
        return self.current_version != self.version or not self.published


@dataclass(frozen=True)
class DraftSources:
    """What a ready draft is grounded in: the knowledge verdict, the passages the draft cites
    and, apart, the others its prompt held; the macro when the draft is a macro offer."""

    knowledge: str  # Draft.Knowledge
    note: str
    cited: list[Source]
    given: list[Source]
    macro_title: str  # "" unless the draft is a macro offer

    @property
    def cited_articles(self) -> int:
        return len({(s.article_id, s.title) for s in self.cited})

    @property
    def is_empty(self) -> bool:
        return not (self.knowledge or self.note or self.cited or self.given or self.macro_title)


def draft_sources(*, draft: Draft | None, shown_text: str = "") -> DraftSources | None:
    """The sources of a ready draft (None otherwise), in two queries whatever their number:
    the attempt the draft came from (its macro, how many passages its prompt held), then the
    passages with their articles' title, URL and current version. `shown_text` is the draft as
    the agent sees it, for highlighting the words it shares with each passage."""
    if draft is None or draft.status != Draft.Status.READY:
        return None
    chosen = (
        DraftAttempt.objects.filter(
            draft_id=draft.pk,
            exploratory=False,
            outcome=DraftAttempt.Outcome.OK,
            # A composer rewrite, later than the draft, is not what the draft came from.
            purpose=DraftAttempt.Purpose.DRAFT,
        )
        .select_related("macro")
        .only("passages_shown", "macro__title")
        .order_by("-started_at", "-id")
        .first()
    )
    shown = chosen.passages_shown if chosen is not None else 0
    passages = (
        DraftPassage.objects.filter(draft_id=draft.pk)
        .select_related("article", "chunk")
        .only(
            "number",
            "text",
            "cited",
            "article_version",
            "article__title",
            "article__source_url",
            "article__version",
            "article__published",
            "chunk__heading",
        )
        .order_by("number")
    )
    cited: list[Source] = []
    given: list[Source] = []
    for p in passages:
        if not p.cited and p.number > shown:
            continue  # found, but the prompt had no room for it: not what the draft is from
        article = p.article
        source = Source(
            number=p.number,
            article_id=p.article_id,
            title=article.title if article is not None else "(deleted article)",
            url=article.source_url if article is not None else "",
            heading=p.chunk.heading if p.chunk is not None else "",
            text=p.text,
            segments=shared_word_segments(p.text, shown_text or draft.text),
            cited=p.cited,
            version=p.article_version,
            current_version=article.version if article is not None else None,
            published=article.published if article is not None else False,
        )
        (cited if p.cited else given).append(source)
    macro = chosen.macro if chosen is not None else None
    return DraftSources(
        knowledge=draft.knowledge,
        note=draft.knowledge_note,
        cited=cited,
        given=given,
        macro_title=macro.title if macro is not None else "",
    )


def macros_for_team(*, team_id: int, q: str = "", limit: int = 8) -> list[Macro]:
    """The team's active macros whose title, body or a tag matches `q` (all when blank), by
    title: what the console's picker offers."""
    macros = Macro.objects.filter(team_id=team_id, active=True)
    if q := q.strip():
        macros = macros.filter(
            Q(title__icontains=q) | Q(body__icontains=q) | Q(tags__contains=[q.lower()])
        )
    return list(macros.only("title", "body").order_by("title", "id")[:limit])


def articles_for_team(*, team_id: int, q: str = "", limit: int = 8) -> list[KnowledgeArticle]:
    """The team's published articles whose title, body or a tag matches `q` (all when
    blank), by title, without their bodies: what the console's picker offers."""
    articles = KnowledgeArticle.objects.filter(team_id=team_id, published=True)
    if q := q.strip():
        articles = articles.filter(
            Q(title__icontains=q) | Q(body__icontains=q) | Q(tags__contains=[q.lower()])
        )
    return list(articles.only("title", "source_url").order_by("title", "id")[:limit])


def team_macro(*, team_id: int, macro_id: int) -> Macro | None:
    """The team's active macro with this id (None: another team's, inactive or no such)."""
    return Macro.objects.filter(pk=macro_id, team_id=team_id, active=True).first()


def team_article(
    *, team_id: int, article_id: int, published_only: bool = True
) -> KnowledgeArticle | None:
    """The team's article with this id (None: another team's, unpublished when
    `published_only`, or no such). A draft may cite an article unpublished since: its agents
    can still read it."""
    articles = KnowledgeArticle.objects.filter(pk=article_id, team_id=team_id)
    if published_only:
        articles = articles.filter(published=True)
    return articles.first()


# --- The agent's wait, for the routing objective (issue 18) ------------------------------------

# How much history the wait estimates read: a count, not a period, so that a quiet endpoint
# still has an estimate and a busy one's is recent.
WAIT_LATENCY_ATTEMPTS = 200
WAIT_SHARE_DRAFTS = 500


def waiting_share(team_id: int) -> Decimal:
    """The share of the team's recent model-written drafts that an agent opened before they
    were ready (first_shown_at < ready_at): how often a draft is waited for. Over the last
    WAIT_SHARE_DRAFTS drafts both shown and ready; cache hits and macros are left out (ready
    in milliseconds, they say nothing about waiting for a model). 0 with no such draft."""
    recent = list(
        Draft.objects.filter(
            policy__team_id=team_id,
            final_endpoint__isnull=False,
            first_shown_at__isnull=False,
            ready_at__isnull=False,
        )
        .order_by("-created_at", "-id")
        .values_list("first_shown_at", "ready_at")[:WAIT_SHARE_DRAFTS]
    )
    if not recent:
        return Decimal(0)
    waited = sum(1 for shown, ready in recent if shown and ready and shown < ready)
    return (Decimal(waited) / Decimal(len(recent))).quantize(Decimal("0.0001"))


def endpoint_latency_p50(*, endpoint_id: int) -> Decimal | None:
    """Median seconds of the endpoint's last WAIT_LATENCY_ATTEMPTS successful draft attempts
    (exploratory ones included: the same call, asked later); None before any."""
    latencies = list(
        DraftAttempt.objects.filter(
            endpoint_id=endpoint_id,
            outcome=DraftAttempt.Outcome.OK,
            purpose=DraftAttempt.Purpose.DRAFT,
        )
        .order_by("-started_at", "-id")
        .values_list("latency_ms", flat=True)[:WAIT_LATENCY_ATTEMPTS]
    )
    if not latencies:
        return None
    return (Decimal(statistics.median(latencies)) / 1000).quantize(Decimal("0.001"))


def wait_estimates(policy_id: int) -> dict[int, Decimal]:
    """Per enabled tier's endpoint of the policy: the seconds an agent is expected to wait
    for the draft because this tier is asked = P(an agent is already waiting) × the tier's
    median latency (`waiting_share` × `endpoint_latency_p50`).

    The approximation: an agent who opened the conversation waits out the whole call, one
    who has not waits for none of it. Multiplied by the team's ActionValues.wait_per_second it
    is the tier's expected wait cost, a slow tier's handicap in the routing objective. An
    endpoint with no successful attempt yet has no estimate (absent from the answer)."""
    tiers = enabled_tiers(policy_id=policy_id)
    team_id = CascadePolicy.objects.filter(pk=policy_id).values_list("team_id", flat=True).first()
    if not tiers or team_id is None:
        return {}
    share = waiting_share(team_id)
    estimates: dict[int, Decimal] = {}
    for tier in tiers:
        latency = endpoint_latency_p50(endpoint_id=tier.endpoint_id)
        if latency is not None:
            estimates[tier.endpoint_id] = (share * latency).quantize(Decimal("0.001"))
    return estimates
