"""What the team's knowledge is worth: ENCS per article and per macro, stale articles, and
content gaps (the articles to write next).

ENCS per article. The drafts an article is counted for are those whose shown draft cited one
of its passages (`DraftPassage.cited`); a macro's are the drafts it wrote (a ready draft whose
text came from a macro attempt: tier 0, outcome ok, not exploratory, no model wrote the final
text). Their figures are the engine's (accounting.engine.totals over facts.facts_of): the same
agent rate, the same T_baseline (the scope's, measured on its held-out replies), outliers left
out of savings as everywhere, money exact until it is rounded once.

Attribution. A draft citing n articles is one draft: each article gets 1/n of its labour
saving and of its cost ("shared"), so the articles' shared ENCS add up to the ENCS of the
grounded drafts, exactly (before the one rounding per figure). Beside it each article shows the
figures of every draft citing it, unshared ("drafts citing": counts, actions, mean edit
distance), which add up to more than the whole when drafts cite several articles. Equal shares
are the simplest rule that sums right and needs no model of which passage did the work; the
passages' retrieval scores would be a guess at that, not a measurement.

Stale articles: the drafts citing an article are heavily edited. Over the drafts agents used or
edited (an ignored draft says the passage was not what was asked, not that it is wrong), an
article is stale when at least STALE_MIN_DRAFTS of them exist and either their mean edit
distance reaches STALE_MEAN_EDIT or the share of heavy edits (an edit distance of HEAVY_EDIT or
more) reaches STALE_HEAVY_SHARE. The newest version the drafts saw is shown beside the
article's current version: a newer version may already have fixed it.

Content gaps: live drafts whose customer turn needed knowledge and found none
(`knowledge == "none_found"`) or whose draft the agent ignored, grouped by similarity of the
turn's stored embedding (the vector retrieval used; no second embedding), within one team and
one embedding model: greedy leader clustering in time order at a cosine of GAP_SIMILARITY —
each turn joins the most similar earlier leader if it is that close, else leads a group of its
own. Deterministic, O(rows × groups), over at most GAP_MAX_ROWS turns (the newest). A turn that
found nothing is counted as `none_found` even when its draft was also ignored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from accounting.engine import SettingsBook, baseline_for, money, totals
from accounting.facts import DRAFTED_KINDS, Fact, Scope, day_start, facts_of, local_tz, scope_facts
from accounting.figures import SHARE, ZERO, Baseline, Figures, plain
from drafting.models import AgentAction, Draft, DraftAttempt, DraftPassage

# An edit that changed at least half of the draft (normalised Levenshtein distance).
HEAVY_EDIT = Decimal("0.5")
# Fewer reviewed drafts than this say nothing about an article.
STALE_MIN_DRAFTS = 5
# A mean edit distance of 0.35 means agents rewrote a third of what the article put in the
# drafts; a draft the agent accepted with a greeting changed is around 0.05-0.15.
STALE_MEAN_EDIT = Decimal("0.35")
STALE_HEAVY_SHARE = Decimal("0.3")
# Sentence embeddings (MiniLM and the like) put paraphrases of one question at a cosine of
# 0.75-0.95 and different questions on one topic mostly below 0.7.
GAP_SIMILARITY = 0.75
GAP_MAX_ROWS = 3000
GAP_EXAMPLES = 3
GAP_EXAMPLE_CHARS = 300

EDIT_DISTANCE = Decimal("0.0001")
REVIEWED = (AgentAction.Kind.USE.value, AgentAction.Kind.EDIT.value)


# --- Typed results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edits:
    """How agents changed the drafts an article or macro is counted for (every answer, the
    outliers of ENCS included: a long pause does not change what was edited)."""

    reviewed: int  # drafts used as is or edited
    heavy: int  # edits of HEAVY_EDIT or more
    mean_edit_distance: Decimal | None  # over the reviewed drafts (a use without one is 0)

    @property
    def heavy_share(self) -> Decimal | None:
        if not self.reviewed:
            return None
        return (Decimal(self.heavy) / Decimal(self.reviewed)).quantize(SHARE)

    @property
    def stale(self) -> bool:
        if self.reviewed < STALE_MIN_DRAFTS or self.mean_edit_distance is None:
            return False
        share = self.heavy_share
        return self.mean_edit_distance >= STALE_MEAN_EDIT or (
            share is not None and share >= STALE_HEAVY_SHARE
        )

    def as_json(self) -> dict[str, Any]:
        share = self.heavy_share
        return {
            "reviewed": self.reviewed,
            "heavy_edits": self.heavy,
            "heavy_share": None if share is None else plain(share),
            "mean_edit_distance": None
            if self.mean_edit_distance is None
            else plain(self.mean_edit_distance),
        }


@dataclass(frozen=True)
class ContentValue:
    """ENCS of one article or macro: the drafts counted for it, unshared (`citing`), and its
    share of them (`shared_*`: 1/n of a draft citing n articles; a macro's drafts are its own)."""

    kind: str  # "article" or "macro"
    id: int
    team_id: int
    title: str
    live: bool  # published (article) or active (macro)
    updated_at: datetime
    version: int | None  # articles: the current version
    seen_version: int | None  # articles: the newest version the drafts cited
    citing: Figures
    shared_drafts: Decimal
    shared_labor_savings_usd: Decimal
    shared_model_cost_usd: Decimal
    shared_encs_usd: Decimal
    edits: Edits

    @property
    def newer_version(self) -> bool:
        """The article changed after the drafts counted here cited it."""
        return (
            self.version is not None
            and self.seen_version is not None
            and self.version > self.seen_version
        )

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": self.id,
            "team": self.team_id,
            "title": self.title,
            ("published" if self.kind == "article" else "active"): self.live,
            "updated_at": self.updated_at.isoformat(),
        }
        if self.kind == "article":
            result.update(
                version=self.version,
                seen_version=self.seen_version,
                newer_version=self.newer_version,
            )
        return {
            **result,
            "drafts": self.citing.drafts,
            "actions": {k: self.citing.actions[k] for k in DRAFTED_KINDS},
            "shared_drafts": plain(self.shared_drafts),
            "labor_savings_usd": plain(self.shared_labor_savings_usd),
            "model_cost_usd": plain(self.shared_model_cost_usd),
            "encs_usd": plain(self.shared_encs_usd),
            "citing": self.citing.as_json(),
            "edits": self.edits.as_json(),
            "stale": self.edits.stale,
        }


@dataclass(frozen=True)
class GapExample:
    draft_id: int
    text: str
    day: date

    def as_json(self) -> dict[str, Any]:
        return {"draft": self.draft_id, "text": self.text, "day": self.day.isoformat()}


@dataclass(frozen=True)
class ContentGap:
    """Similar customer turns that found no knowledge or whose drafts were ignored."""

    team_id: int
    embedding_model: str
    count: int
    none_found: int
    ignored: int
    first_day: date
    last_day: date
    examples: tuple[GapExample, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "team": self.team_id,
            "embedding_model": self.embedding_model,
            "count": self.count,
            "none_found": self.none_found,
            "ignored": self.ignored,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "examples": [e.as_json() for e in self.examples],
        }


@dataclass(frozen=True)
class ContentGaps:
    groups: tuple[ContentGap, ...]
    turns: int  # the turns grouped
    capped: bool  # more turns matched than GAP_MAX_ROWS: the oldest were left out

    def as_json(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "capped": self.capped,
            "groups": [g.as_json() for g in self.groups],
        }


@dataclass(frozen=True)
class KnowledgeValue:
    """The scope's grounded drafts and macro drafts in total, and per article and per macro
    (highest shared ENCS first)."""

    grounded_drafts: int
    grounded_encs_usd: Decimal  # = Σ articles' shared ENCS, exactly before rounding
    macro_drafts: int
    macro_encs_usd: Decimal
    articles: tuple[ContentValue, ...]
    macros: tuple[ContentValue, ...]

    @property
    def stale(self) -> tuple[ContentValue, ...]:
        """Stale articles, the most heavily edited first."""
        found = [a for a in self.articles if a.edits.stale]
        return tuple(
            sorted(
                found,
                key=lambda a: (
                    -(a.edits.heavy_share or ZERO),
                    -(a.edits.mean_edit_distance or ZERO),
                    a.title,
                    a.id,
                ),
            )
        )


@dataclass(frozen=True)
class KnowledgeReport:
    start: date
    last: date
    value: KnowledgeValue
    gaps: ContentGaps

    def as_json(self) -> dict[str, Any]:
        value = self.value
        return {
            "from": self.start.isoformat(),
            "to": self.last.isoformat(),
            "grounded_drafts": value.grounded_drafts,
            "grounded_encs_usd": plain(value.grounded_encs_usd),
            "macro_drafts": value.macro_drafts,
            "macro_encs_usd": plain(value.macro_encs_usd),
            "articles": [a.as_json() for a in value.articles],
            "macros": [m.as_json() for m in value.macros],
            "stale_articles": [a.as_json() for a in value.stale],
            "content_gaps": self.gaps.as_json(),
        }


# --- ENCS per article and per macro -------------------------------------------------------------


def _in_scope(rows: QuerySet[Any], scope: Scope, *, via: str) -> QuerySet[Any]:
    rows = rows.filter(
        **{
            f"{via}created_at__gte": day_start(scope.start),
            f"{via}created_at__lt": day_start(scope.end),
        }
    )
    if scope.team_ids is not None:
        rows = rows.filter(**{f"{via}policy__team_id__in": scope.team_ids})
    if scope.policy_ids is not None:
        rows = rows.filter(**{f"{via}policy_id__in": scope.policy_ids})
    return rows


def _edit_aggregates(via: str) -> dict[str, Any]:
    """Per fact row: reviewed drafts, the sum of their edit distances, heavy edits."""
    action = f"{via}action__"
    reviewed = Q(**{f"{action}kind__in": REVIEWED})
    distance: DecimalField[Any, Any] = DecimalField(max_digits=20, decimal_places=4)
    return {
        "reviewed": Count(f"{via}id", filter=reviewed),
        "distance_sum": Coalesce(
            Sum(Coalesce(f"{action}edit_distance", Value(ZERO)), filter=reviewed),
            Value(ZERO),
            output_field=distance,
        ),
        "heavy": Count(
            f"{via}id",
            filter=Q(
                **{
                    f"{action}kind": AgentAction.Kind.EDIT,
                    f"{action}edit_distance__gte": HEAVY_EDIT,
                }
            ),
        ),
    }


def cited_articles(scope: Scope) -> QuerySet[DraftPassage]:
    """One cited passage per (draft, article) for the scope's drafts (the lowest-numbered, so a
    draft citing two chunks of one article counts once), with `n_cited`: how many articles
    that draft cites."""
    earlier = DraftPassage.objects.filter(
        draft=OuterRef("draft"),
        article=OuterRef("article"),
        cited=True,
        number__lt=OuterRef("number"),
    )
    articles_of_draft = (
        DraftPassage.objects.filter(draft=OuterRef("draft"), cited=True, article__isnull=False)
        .order_by()
        .values("draft")
        .annotate(n=Count("article", distinct=True))
        .values("n")
    )
    passages = DraftPassage.objects.filter(cited=True, article__isnull=False).filter(
        ~Exists(earlier)
    )
    return _in_scope(passages, scope, via="draft__").annotate(n_cited=Subquery(articles_of_draft))


def macro_offers(scope: Scope) -> QuerySet[DraftAttempt]:
    """The macro attempt that wrote each of the scope's macro drafts (one per draft)."""
    offers = DraftAttempt.objects.filter(
        macro__isnull=False,
        outcome=DraftAttempt.Outcome.OK,
        exploratory=False,
        draft__final_endpoint__isnull=True,
    )
    earlier = offers.filter(draft=OuterRef("draft"), id__lt=OuterRef("id"))
    return _in_scope(offers.filter(~Exists(earlier)), scope, via="draft__")


@dataclass
class _Sums:
    """What one article's or macro's fact rows add up to, before pricing."""

    meta: Mapping[str, Any]
    facts: dict[int, list[Fact]] = field(default_factory=lambda: defaultdict(list))  # per n
    reviewed: int = 0
    distance_sum: Decimal = ZERO
    heavy: int = 0
    seen_version: int | None = None


def _sum_rows(rows: list[tuple[dict[str, Any], Fact]], *, key: str) -> dict[int, _Sums]:
    sums: dict[int, _Sums] = {}
    for values, fact in rows:
        item = sums.get(values[key])
        if item is None:
            item = sums[values[key]] = _Sums(meta=values)
        item.facts[values.get("n_cited") or 1].append(fact)
        item.reviewed += values["reviewed"]
        item.distance_sum += Decimal(values["distance_sum"])
        item.heavy += values["heavy"]
        version = values.get("seen_version")
        if version is not None and (item.seen_version is None or version > item.seen_version):
            item.seen_version = version
    return sums


@dataclass
class _Pricer:
    scope: Scope
    book: SettingsBook
    baselines: Mapping[int, Baseline]

    def value(self, kind: str, item: _Sums, prefix: str) -> tuple[ContentValue, Fraction, Fraction]:
        """The item's figures, and its shared ENCS and drafts before rounding (for the
        totals)."""
        everything = [f for facts in item.facts.values() for f in facts]
        citing, _groups, _b = totals(
            everything, scope=self.scope, book=self.book, baselines=self.baselines
        )
        labour, cost, drafts = Fraction(0), Fraction(0), Fraction(0)
        for n, facts in item.facts.items():
            part, _groups, _b = totals(
                facts, scope=self.scope, book=self.book, baselines=self.baselines
            )
            labour += part.labour_savings() / n
            cost += Fraction(part.cost) / n
            drafts += Fraction(part.figures().drafts, n)
        figures = citing.figures()
        meta = item.meta
        mean = (
            (item.distance_sum / item.reviewed).quantize(EDIT_DISTANCE) if item.reviewed else None
        )
        value = ContentValue(
            kind=kind,
            id=meta[f"{prefix}_id"],
            team_id=meta[f"{prefix}__team_id"],
            title=meta[f"{prefix}__title"],
            live=meta[f"{prefix}__published" if kind == "article" else f"{prefix}__active"],
            updated_at=meta[f"{prefix}__updated_at"],
            version=meta.get(f"{prefix}__version"),
            seen_version=item.seen_version,
            citing=figures,
            shared_drafts=(Decimal(drafts.numerator) / drafts.denominator).quantize(SHARE),
            shared_labor_savings_usd=money(labour),
            shared_model_cost_usd=money(cost),
            shared_encs_usd=money(labour - cost),
            edits=Edits(reviewed=item.reviewed, heavy=item.heavy, mean_edit_distance=mean),
        )
        return value, labour - cost, drafts


def scope_baselines(scope: Scope, *, book: SettingsBook) -> dict[int, Baseline]:
    """Each team's T_baseline over the scope, as `encs_figures` measures it."""
    facts = [f for f in scope_facts(scope, by_agent=False) if scope.admits(f)]
    last_day = date.fromordinal(scope.end.toordinal() - 1)
    teams = sorted({f.team_id for f in facts} | set(scope.team_ids or ()))
    return {t: baseline_for(facts, team_id=t, book=book, last_day=last_day) for t in teams}


def _ranked(values: list[ContentValue]) -> tuple[ContentValue, ...]:
    return tuple(sorted(values, key=lambda v: (-v.shared_encs_usd, v.title, v.id)))


def knowledge_value(
    scope: Scope,
    *,
    baselines: Mapping[int, Baseline] | None = None,
    book: SettingsBook | None = None,
) -> KnowledgeValue:
    """ENCS per article and per macro over `scope` (two queries, plus the baselines' when
    they are not given: pass an `EncsReport`'s for the same scope)."""
    book = book or SettingsBook.load()
    if baselines is None:
        baselines = scope_baselines(scope, book=book)
    article_keys = (
        "article_id",
        "n_cited",
        "article__team_id",
        "article__title",
        "article__published",
        "article__updated_at",
        "article__version",
    )
    cited = facts_of(
        cited_articles(scope),
        via="draft__",
        keys=article_keys,
        extra={**_edit_aggregates("draft__"), "seen_version": Max("article_version")},
    )
    macro_keys = (
        "macro_id",
        "macro__team_id",
        "macro__title",
        "macro__active",
        "macro__updated_at",
    )
    offered = facts_of(
        macro_offers(scope), via="draft__", keys=macro_keys, extra=_edit_aggregates("draft__")
    )
    pricer = _Pricer(scope=scope, book=book, baselines=baselines)
    found: dict[str, list[ContentValue]] = {"article": [], "macro": []}
    encs = {"article": Fraction(0), "macro": Fraction(0)}
    drafts = {"article": Fraction(0), "macro": Fraction(0)}
    for kind, rows in (("article", cited), ("macro", offered)):
        for item in _sum_rows(rows, key=f"{kind}_id").values():
            value, shared_encs, shared_drafts = pricer.value(kind, item, kind)
            found[kind].append(value)
            encs[kind] += shared_encs
            # A draft citing n articles is 1/n in each of them: the shares add up to 1.
            drafts[kind] += shared_drafts
    return KnowledgeValue(
        grounded_drafts=int(drafts["article"]),
        grounded_encs_usd=money(encs["article"]),
        macro_drafts=int(drafts["macro"]),
        macro_encs_usd=money(encs["macro"]),
        articles=_ranked(found["article"]),
        macros=_ranked(found["macro"]),
    )


# --- Content gaps -------------------------------------------------------------------------------


def _leaders(vectors: np.ndarray[Any, Any], threshold: float) -> list[int]:
    """Greedy leader clustering: the group (index of its leader row) of each row, in order."""
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    leaders = np.empty_like(unit)
    leader_rows: list[int] = []
    groups: list[int] = []
    for i, vector in enumerate(unit):
        if leader_rows:
            similarity = leaders[: len(leader_rows)] @ vector
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                groups.append(leader_rows[best])
                continue
        leaders[len(leader_rows)] = vector
        leader_rows.append(i)
        groups.append(i)
    return groups


def content_gaps(
    scope: Scope, *, threshold: float = GAP_SIMILARITY, limit: int = GAP_MAX_ROWS
) -> ContentGaps:
    """Customer turns that needed knowledge and found none, or whose drafts were ignored,
    grouped by similarity (one query; the largest groups first)."""
    turns = (
        _in_scope(Draft.objects.live(), scope, via="")
        .filter(question_embedding__isnull=False)
        .exclude(question_embedding_model="")
        .filter(Q(knowledge=Draft.Knowledge.NONE_FOUND) | Q(action__kind=AgentAction.Kind.IGNORE))
        .annotate(team=F("policy__team_id"), ignored=F("action__kind"), asked=F("message__text"))
        .order_by("-created_at", "-id")
        .values_list(
            "id",
            "team",
            "question_embedding_model",
            "question_embedding",
            "asked",
            "created_at",
            "knowledge",
        )[: limit + 1]
    )
    rows = list(turns)
    capped = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()  # oldest first: a group's leader is its earliest turn
    by_embedder: dict[tuple[int, str, int], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        vector = np.asarray(row[3], dtype=np.float64)
        by_embedder[row[1], row[2], vector.shape[0]].append((*row, vector))
    tz = local_tz()
    gaps: list[tuple[int, ContentGap]] = []
    for (team_id, model, _dims), members in by_embedder.items():
        groups = _leaders(np.stack([m[-1] for m in members]), threshold)
        grouped: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for member, leader in zip(members, groups, strict=True):
            grouped[leader].append(member)
        for group in grouped.values():
            none_found = sum(1 for m in group if m[6] == Draft.Knowledge.NONE_FOUND)
            days = [m[5].astimezone(tz).date() for m in group]
            gaps.append(
                (
                    group[0][0],
                    ContentGap(
                        team_id=team_id,
                        embedding_model=model,
                        count=len(group),
                        none_found=none_found,
                        ignored=len(group) - none_found,
                        first_day=min(days),
                        last_day=max(days),
                        examples=tuple(
                            GapExample(
                                draft_id=m[0],
                                text=m[4][:GAP_EXAMPLE_CHARS],
                                day=m[5].astimezone(tz).date(),
                            )
                            for m in group[:GAP_EXAMPLES]
                        ),
                    ),
                )
            )
    gaps.sort(key=lambda g: (-g[1].count, -g[1].last_day.toordinal(), g[0]))
    return ContentGaps(groups=tuple(g for _leader, g in gaps), turns=len(rows), capped=capped)


def knowledge_report(
    scope: Scope, *, baselines: Mapping[int, Baseline] | None = None
) -> KnowledgeReport:
    """Everything managers see about the knowledge for `scope`: three queries (plus the
    baselines' when not given)."""
    return KnowledgeReport(
        start=scope.start,
        last=date.fromordinal(scope.end.toordinal() - 1),
        value=knowledge_value(scope, baselines=baselines),
        gaps=content_gaps(scope),
    )
