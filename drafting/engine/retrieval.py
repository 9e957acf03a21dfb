"""The one search of a team's knowledge base: hybrid (vector + full text), fused, focused.

`retrieve` returns the passages (chunks) a draft is grounded in, best first. Steps:

1. The team's published article titles and languages (`_TeamArticles`, remembered per process
   for TITLES_SECONDS, forgotten at once when an article is saved or deleted in the process).
2. Focus: the articles the conversation talks about. Their titles, normalised (case, accents,
   punctuation; generic words such as "hotel", "restaurant", "guest house" and "the" trimmed),
   are looked for in the query, then in the thread's turns from the newest: the first text
   that names any article names the focus (several articles when one turn names several).
   Matching is fuzzy (rapidfuzz, so "lensfeld" finds "The Lensfield Hotel") but only on
   titles sharing a token with the text, found through a token index: thousands of titles
   cost no more than a handful.
3. One SQL statement (one round trip) builds up to three ranked candidate lists of
   `candidates` chunks each, restricted to the team's published articles (and `tags`):
   - vector: pgvector cosine over the chunks embedded by the query's embedder (same name and
     dimension), ordered on the per-dimension HNSW index's own expression, as
     drafting.engine.vectors.nearest does (iterative scans keep the team filter from starving
     the list); skipped when there is no embedder (text search only);
   - text: PostgreSQL full-text search ranked by ts_rank_cd. Customer questions are natural
     language: an AND of their words (websearch_to_tsquery) rarely matches a chunk, so the
     query is an OR of the question's meaningful lexemes (to_tsvector's, i.e. stemmed and
     without stop words), and ts_rank_cd's cover density ranks the chunks matching more of
     them, closer together, higher. Words in more chunks than TEXT_MATCHES (by ANALYZE's
     statistics) only select chunks when the question has no rarer word, and at most
     TEXT_MATCHES matches are ranked: the time stays bounded however common the words (see
     _QUERY_CTE). A team may write in several languages: the lexemes are
     those of every configuration its published articles use (chunking.search_config),
     OR-ed, so an English question finds English chunks and a German one German chunks,
     through the one GIN index;
   - focus: the focus articles' own chunks, nearest to the query (by text rank without an
     embedder). In a knowledge base of many similar articles (hotels, products) the right
     article is usually the one the customer named, and its best chunks may be missing from
     the two team-wide lists.
   The lists are fused by reciprocal rank fusion (Cormack et al. 2009): a chunk's score is the
   sum over the lists it appears in of 1 / (RRF_K + its 1-based position), RRF_K = 60 as in
   the paper: it rewards agreement between the lists while one list's first place does not
   swamp the rest. A chunk of a focus article also gets FOCUS_BOOST, worth one more first
   place: a focus chunk the lists agree on beats any other, while a chunk both team-wide
   lists put first still beats a focus chunk that only the focus list found.
4. A re-ranker, when given (the learning layer's), re-orders all fused candidates; then the
   best `k` are returned.

An empty or blank query returns no passages (there is nothing to look for) and costs nothing.
A team without chunks, or whose chunks are not embedded yet, gets what the text search finds.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.db import connection
from pgvector.django import VectorField
from rapidfuzz import fuzz, process

from csbot.memo import Memo
from drafting.engine.chunking import search_config
from drafting.engine.vectors import QueryVector
from drafting.models import KnowledgeArticle

# Reciprocal rank fusion's constant (Cormack, Clarke, Büttcher 2009; their k = 60).
RRF_K = 60
# A focus article's chunk is worth one more first place in the fusion (see the docstring).
FOCUS_BOOST = 1.0 / (RRF_K + 1)
# At most this many articles are the focus at once (a turn naming a long list of hotels).
MAX_FOCUS = 5
# Only the newest turns are searched for a named article: older ones name what is past.
FOCUS_TURNS = 10
# rapidfuzz ratios (0-100): a title matched in a text, and an unknown word taken for a title's
# word (a typo: "lensfeld" for "lensfield"). Titles of one or two letters must match exactly.
TITLE_MATCH = 88.0
WORD_MATCH = 85.0
FUZZY_WORD_MIN_CHARS = 5
# At most this many chunks matching the text query are ranked (see _TEXT_CTE), and a lexeme
# in more chunks than that is common (see _QUERY_CTE).
TEXT_MATCHES = 1000
# How long the titles stay remembered in another process than the one that saved an article.
# Longer than csbot.memo.SECONDS: a team's titles are thousands of rows, and they only steer
# the focus; publishing and unpublishing take effect at once anyway (the statement joins the
# article's `published`).
TITLES_SECONDS = 30.0

# Words that name the kind of place or thing rather than which one: trimmed from titles (and
# from the text they are looked for in), so "the Lensfield" and "Lensfield Hotel" both name
# "The Lensfield Hotel". Phrases first, as whole-word sequences.
GENERIC_PHRASES = (
    ("bed", "and", "breakfast"),
    ("guest", "house"),
    ("b", "and", "b"),
    ("b", "b"),
)
GENERIC_WORDS = frozenset(
    {
        "the",
        "hotel",
        "hotels",
        "restaurant",
        "restaurants",
        "guesthouse",
        "guesthouses",
        "lodge",
        "inn",
        "hostel",
        "cafe",
        "bar",
        "bistro",
        "grill",
    }
)
# Words too common to find a title by (the index skips them; the match itself still counts them).
STOP_WORDS = frozenset({"and", "of", "in", "at", "on", "for", "to", "de", "la", "le", "&"})

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    article_id: int
    article_version: int
    article_title: str
    heading: str
    text: str
    source_url: str
    score: float  # after fusion (and re-ranking, when a re-ranker is given)
    vector_similarity: float | None  # cosine to the query; None without an embedder/vector
    text_rank: float | None  # ts_rank_cd; None when the chunk matched none of the words
    vector_position: int | None  # 1-based place in the vector list
    text_position: int | None  # 1-based place in the text list
    focus: bool  # the chunk's article is named in the thread (or the query)
    # Kept by a learned re-ranker's cut-off (`score` is then its probability): its judgement,
    # trained on the team's labels, says the passage answers the turn, not a similarity floor.
    reranked: bool = False


class Reranker(Protocol):
    """A learned re-ranker (the learning layer's) plugs in here: it gets every fused candidate,
    best first, and returns them (or some) in its order, with its own scores."""

    def rerank(self, *, query: str, passages: Sequence[Passage]) -> list[Passage]: ...


@dataclass(frozen=True)
class Candidates:
    """What a learned re-ranker scores for one turn (`candidates`): every embedded chunk of
    the focus articles (at most `per_article` each, nearest to the stripped question), with
    their vectors, positions and text ranks, and the team-wide nearest chunks' vectors.

    `stripped` is the turn without the titles it names (`_TeamArticles.without_titles`), and
    `vector` its embedding: what the chunks are compared with. `turn_vector` is the turn's
    own embedding (None when the caller has none)."""

    query: str
    stripped: str
    focus: tuple[int, ...]  # article ids, in the order the thread names them
    named_in_query: frozenset[int]  # focus articles the turn itself names
    passages: tuple[Passage, ...]  # the focus chunks, nearest first
    positions: tuple[int, ...]  # each passage's chunk position in its article
    vectors: npt.NDArray[np.float32]  # one unit row per passage
    vector: npt.NDArray[np.float32]
    turn_vector: npt.NDArray[np.float32] | None
    team_vectors: npt.NDArray[np.float32]  # the team's chunks nearest to `vector`, nearest first
    team_similarities: npt.NDArray[np.float32]


@runtime_checkable
class CandidateReranker(Protocol):
    """A learned re-ranker that scores the focus articles' chunks itself (the learning layer's
    passage re-ranker): it gets `Candidates` and returns the passages it keeps, best first,
    their scores its own. `per_article` caps the candidates of one article."""

    @property
    def per_article(self) -> int: ...

    def rerank_candidates(self, candidates: Candidates) -> list[Passage]: ...


# --- Titles and focus -------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words without accents or punctuation ("Café-Bar" -> ["cafe", "bar"])."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
    return _WORD.findall(plain)


def distinctive(tokens: Sequence[str]) -> list[str]:
    """`tokens` without generic phrases and words; `tokens` itself if nothing else is left
    (a restaurant called "The Restaurant")."""
    kept = distinctive_positions(tokens)
    return [tokens[i] for i in kept] if kept else list(tokens)


def distinctive_positions(tokens: Sequence[str]) -> list[int]:
    """The places in `tokens` of the words that are not generic (see `distinctive`)."""
    kept: list[int] = []
    i = 0
    while i < len(tokens):
        phrase = next(
            (p for p in GENERIC_PHRASES if tuple(tokens[i : i + len(p)]) == p),
            None,
        )
        if phrase is not None:
            i += len(phrase)
            continue
        if tokens[i] not in GENERIC_WORDS:
            kept.append(i)
        i += 1
    return kept


@dataclass
class _TeamArticles:
    """A team's published articles as the focus and the text search need them: the search
    configurations of their languages, each title's distinctive words, and a token index
    from every such word to the titles that have it."""

    configs: tuple[str, ...]
    titles: dict[int, tuple[str, ...]]  # article id -> its title's distinctive words
    index: dict[str, set[int]]  # word -> article ids
    _fuzzy: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, rows: Sequence[tuple[int, str, str]]) -> _TeamArticles:
        titles: dict[int, tuple[str, ...]] = {}
        index: dict[str, set[int]] = {}
        for article_id, title, _ in rows:
            tokens = tuple(distinctive(words(title)))
            if not tokens:
                continue
            titles[article_id] = tokens
            for token in set(tokens) - STOP_WORDS:
                index.setdefault(token, set()).add(article_id)
        configs = tuple(sorted({search_config(language) for _, _, language in rows}))
        return cls(configs=configs, titles=titles, index=index)

    def _known(self, token: str) -> str | None:
        """The title word `token` is, itself or through a typo (remembered per word)."""
        if token in self.index:
            return token
        if len(token) < FUZZY_WORD_MIN_CHARS or token in GENERIC_WORDS:
            return None
        with self._lock:
            if token in self._fuzzy:
                return self._fuzzy[token]
        found = process.extractOne(
            token, self.index.keys(), scorer=fuzz.ratio, score_cutoff=WORD_MATCH
        )
        match = None if found is None else str(found[0])
        with self._lock:
            if len(self._fuzzy) > 10_000:
                self._fuzzy.clear()
            self._fuzzy[token] = match
        return match

    def named_in(self, text: str) -> list[int]:
        """The articles whose titles `text` names, in the order the text names them (the
        research's rule, docs/performance.md "Knowledge: DSTC11 track 5": a turn listing two
        hotels makes both the focus). Where two titles match the same words ("Nandos" in
        "Nandos City Centre"), the better match, then the longer, keeps them."""
        tokens = distinctive(words(text))
        return [article_id for article_id, _, _ in self._mentions(tokens)][:MAX_FOCUS]

    def _mentions(self, tokens: Sequence[str]) -> list[tuple[int, int, int]]:
        """(article id, first token, token after the last) of each title named in `tokens`,
        in text order, non-overlapping."""
        anchors: dict[int, set[int]] = {}  # article id -> positions of its words in tokens
        for position, token in enumerate(tokens):
            known = self._known(token)
            if known is None:
                continue
            for article_id in self.index[known]:
                anchors.setdefault(article_id, set()).add(position)
        found: list[tuple[float, int, int, int, int]] = []
        for article_id, positions in anchors.items():
            score, start, end = self._score(self.titles[article_id], tokens, positions)
            if score >= TITLE_MATCH:
                found.append((score, end - start, start, end, article_id))
        taken: list[tuple[int, int, int]] = []
        for _, _, start, end, article_id in sorted(found, key=lambda f: (-f[0], -f[1], f[4])):
            if not any(start < e and s < end for _, s, e in taken):
                taken.append((article_id, start, end))
        return sorted(taken, key=lambda t: (t[1], t[0]))

    def without_titles(self, text: str) -> str:
        """`text` as lower-case words without the titles it names, generic words next to a
        title included ("the Lensfield hotel"): the question the way the re-ranker embeds it
        (a hotel's name says which article, not what is asked; left in, it pulls every chunk
        of that article alike). Generic words elsewhere stay ("does it have a bar")."""
        tokens = words(text)
        kept = distinctive_positions(tokens)
        if not kept:
            return " ".join(tokens)
        generic = set(range(len(tokens))) - set(kept)
        cut: set[int] = set()
        for _, start, end in self._mentions([tokens[i] for i in kept]):
            first, last = kept[start], kept[end - 1]
            while first - 1 in generic:
                first -= 1
            while last + 1 in generic:
                last += 1
            cut.update(range(first, last + 1))
        return " ".join(t for i, t in enumerate(tokens) if i not in cut)

    @staticmethod
    def _score(
        title: tuple[str, ...], tokens: Sequence[str], positions: set[int]
    ) -> tuple[float, int, int]:
        """The best ratio between the title and a run of the text's words about as long as
        the title around one of its words (one word more or less: a word left out or added),
        and that run's bounds."""
        target = " ".join(title)
        n = len(title)
        best = (0.0, 0, 0)
        for position in sorted(positions):
            for length in sorted({max(1, n - 1), n, n + 1}):
                for start in range(max(0, position - length + 1), position + 1):
                    window = tokens[start : start + length]
                    if not window:
                        continue
                    candidate = " ".join(window)
                    if len(target) <= 2:  # "ask"-like short titles: exact words only
                        score = 100.0 if candidate == target else 0.0
                    else:
                        score = fuzz.ratio(target, candidate)
                    if score > best[0]:
                        best = (score, start, start + len(window))
        return best


def _load_articles(team_id: int) -> _TeamArticles:
    rows = KnowledgeArticle.objects.filter(team_id=team_id, published=True).values_list(
        "id", "title", "language"
    )
    return _TeamArticles.build(list(rows))


_articles: Memo[int, _TeamArticles] = Memo(
    seconds=TITLES_SECONDS, depends_on=(KnowledgeArticle,), max_size=256
)


def team_articles(team_id: int) -> _TeamArticles:
    return _articles.get(team_id, lambda: _load_articles(team_id))


def focus_articles(articles: _TeamArticles, *, query: str, thread: Sequence[str]) -> list[int]:
    """The articles most recently named: in the query, else in the newest thread turn that
    names one (thread is oldest first)."""
    for text in (query, *reversed(thread[-FOCUS_TURNS:])):
        named = articles.named_in(text)
        if named:
            return named
    return []


# --- The statement ----------------------------------------------------------------------------

# The question's lexemes (to_tsvector's: stemmed, no stop words) in every configuration of
# the team, quoted as tsquery's input wants (single quotes and backslashes doubled), and
# whether each is common: in more chunks than TEXT_MATCHES, by ANALYZE's statistics of
# search_vector (its most common elements and their shares, times the table's rows; a lexeme
# not listed is rarer than those). Two queries: `ranking`, the OR of them all, orders the
# matches (ts_rank_cd); `matching` picks the chunks to rank: those with any of the rare
# lexemes, or, when all are common, those with all of them. A question's common words
# ("room", "order") match a large share of a big team's chunks, each costing a heap fetch and
# a ts_rank_cd, while its rare words (a product code, a name) are what the text search is
# for and must never be crowded out (chunks matching only common words are the vector
# list's to find). Until the table has many chunks no lexeme is common: `matching` is
# `ranking`.
_QUERY_CTE = """
lexemes AS (
    SELECT DISTINCT
           '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''' AS quoted,
           coalesce(
               stats.freqs[array_position(stats.elems, lexeme)] * stats.chunks
                   > %(text_matches)s,
               false
           ) AS common
    FROM unnest(%(configs)s::regconfig[]) AS config
    CROSS JOIN unnest(tsvector_to_array(to_tsvector(config, %(text)s))) AS lexeme
    LEFT JOIN (
        SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs,
               (SELECT reltuples FROM pg_class
                WHERE oid = 'drafting_knowledgechunk'::regclass) AS chunks
        FROM pg_stats
        WHERE schemaname = current_schema() AND tablename = 'drafting_knowledgechunk'
          AND attname = 'search_vector'
    ) stats ON true
),
query AS (
    SELECT coalesce(string_agg(quoted, ' | '), '')::tsquery AS ranking,
           coalesce(
               string_agg(quoted, ' | ') FILTER (WHERE NOT common),
               string_agg(quoted, ' & ') FILTER (WHERE common),
               ''
           )::tsquery AS matching
    FROM lexemes
)"""

# The team's published articles (having any of `tags`, when given), joined to each list's
# chunks: unpublishing or deleting an article takes its chunks out at once.
_ARTICLE_FILTER = """
    JOIN drafting_knowledgearticle a ON a.id = c.article_id
    WHERE c.team_id = %(team)s AND a.team_id = %(team)s AND a.published{tags}"""

# The tsqueries as scalar subqueries (InitPlan parameters), not a join with the CTE: only a
# parameter can be the GIN index's condition.
_MATCHING = "(SELECT matching FROM query)"
_RANKING = "(SELECT ranking FROM query)"

_VECTOR_CTE = """
vector_hits AS MATERIALIZED (
    SELECT c.id, c.embedding::vector({n}) <=> %(vector)s::vector({n}) AS distance
    FROM drafting_knowledgechunk c{article_filter}
      AND c.embedding_model = %(model)s AND c.embedding_dimensions = {n}
    ORDER BY distance
    LIMIT %(candidates)s
),
vector_list AS (
    SELECT id, 1 - distance AS similarity, row_number() OVER (ORDER BY distance, id) AS position
    FROM vector_hits
)"""

# At most TEXT_MATCHES matching chunks are ranked: past that many, the words are so common
# that they say little about which chunk answers (the vector list carries the order then),
# and the statement's time stays bounded.
_TEXT_CTE = """
text_list AS (
    SELECT id, rank, row_number() OVER (ORDER BY rank DESC, id) AS position
    FROM (
        SELECT id, ts_rank_cd(search_vector, {ranking}) AS rank
        FROM (
            SELECT c.id, c.search_vector
            FROM drafting_knowledgechunk c{article_filter}
              AND c.search_vector @@ {matching}
            LIMIT %(text_matches)s
        ) matches
        ORDER BY rank DESC, id
        LIMIT %(candidates)s
    ) ranked
)"""

# A fence (MATERIALIZED): the focus articles' few chunks are read through the (article,
# position) index and sorted, never looked for by walking the team-wide HNSW graph. Nearest
# to the query first (chunks another embedder made last), else by text rank, else in
# reading order.
_FOCUS_CTE = """
focus_rows AS MATERIALIZED (
    SELECT c.id, c.position, {distance} AS distance,
           CASE WHEN c.search_vector @@ {ranking}
                THEN ts_rank_cd(c.search_vector, {ranking}) END AS rank
    FROM drafting_knowledgechunk c{article_filter}
      AND c.article_id = ANY(%(focus)s::bigint[])
),
focus_list AS (
    SELECT id, 1 - distance AS similarity, rank,
           row_number() OVER (ORDER BY distance NULLS LAST, rank DESC NULLS LAST, position, id)
               AS position
    FROM focus_rows
    ORDER BY 4
    LIMIT %(candidates)s
)"""
_FOCUS_DISTANCE = (
    "CASE WHEN c.embedding_model = %(model)s AND c.embedding_dimensions = {n}"
    " THEN c.embedding::vector({n}) <=> %(vector)s::vector({n}) END"
)

# Reciprocal rank fusion of the lists, the focus boost, the best first.
_FUSE = """
hits AS (
    {hits}
),
fused AS (
    SELECT id,
           sum(1.0 / ({rrf_k} + position)) AS score,
           min(position) FILTER (WHERE list = 'vector') AS vector_position,
           min(position) FILTER (WHERE list = 'text') AS text_position,
           max(similarity) AS similarity,
           max(rank) AS rank
    FROM hits
    GROUP BY id
)
SELECT c.id, c.article_id, a.version, a.title, c.heading, c.text, a.source_url,
       f.score + CASE WHEN c.article_id = ANY(%(focus)s::bigint[]) THEN {boost} ELSE 0 END
           AS score,
       f.similarity, f.rank, f.vector_position, f.text_position,
       c.article_id = ANY(%(focus)s::bigint[]) AS focus
FROM fused f
JOIN drafting_knowledgechunk c ON c.id = f.id
JOIN drafting_knowledgearticle a ON a.id = c.article_id
ORDER BY score DESC, c.id
LIMIT %(limit)s"""

_HITS = {
    "vector": "SELECT id, 'vector' AS list, position, similarity, NULL::real AS rank "
    "FROM vector_list",
    "text": "SELECT id, 'text' AS list, position, NULL::float8 AS similarity, rank FROM text_list",
    "focus": "SELECT id, 'focus' AS list, position, similarity, rank FROM focus_list",
}


def retrieval_sql(*, dimensions: int | None, focus: bool, tags: bool) -> str:
    """The statement for a query with a vector of `dimensions` (None: text search only),
    focus articles or not, a tag filter or not. Parameters: team, configs, text, candidates,
    focus (ids), limit; with a vector: vector, model; with tags: tags."""
    article_filter = _ARTICLE_FILTER.format(
        tags=" AND a.tags && %(tags)s::varchar[]" if tags else ""
    )
    n = None if dimensions is None else int(dimensions)
    ctes = [_QUERY_CTE]
    lists = ["text"]
    if n is not None:
        ctes.append(_VECTOR_CTE.format(n=n, article_filter=article_filter))
        lists.insert(0, "vector")
    ctes.append(
        _TEXT_CTE.format(matching=_MATCHING, ranking=_RANKING, article_filter=article_filter)
    )
    if focus:
        distance = "NULL::float8" if n is None else _FOCUS_DISTANCE.format(n=n)
        ctes.append(
            _FOCUS_CTE.format(distance=distance, ranking=_RANKING, article_filter=article_filter)
        )
        lists.append("focus")
    fuse = _FUSE.format(
        hits="\n    UNION ALL ".join(_HITS[name] for name in lists),
        rrf_k=RRF_K,
        boost=repr(FOCUS_BOOST),
    )
    return "WITH" + ",".join(ctes) + "," + fuse


# --- The search -------------------------------------------------------------------------------


def retrieve(
    *,
    team_id: int,
    query: QueryVector,
    thread: Sequence[str] = (),
    tags: Sequence[str] = (),
    k: int | None = None,
    candidates: int | None = None,
    reranker: Reranker | CandidateReranker | None = None,
) -> list[Passage]:
    """The team's best `k` passages (settings.KNOWLEDGE_PASSAGES) for `query`, best first;
    `thread` is the conversation's earlier turns, oldest first (the focus is looked for
    there); `tags` keeps articles having any of them; `candidates` per list
    (settings.KNOWLEDGE_CANDIDATES). One statement, plus one to load the team's titles when
    they are not remembered. See the module docstring for the steps."""
    k = settings.KNOWLEDGE_PASSAGES if k is None else k
    candidates = settings.KNOWLEDGE_CANDIDATES if candidates is None else candidates
    text = query.text.strip()
    if not text or k <= 0 or candidates <= 0:
        return []
    articles = team_articles(team_id)
    focus = focus_articles(articles, query=text, thread=thread)
    if isinstance(reranker, CandidateReranker):
        found = rerank_candidates(
            team_id=team_id,
            query=query,
            thread=thread,
            tags=tags,
            per_article=reranker.per_article,
        )
        if found is not None:
            return reranker.rerank_candidates(found)[:k]
        reranker = None  # no article named: the hybrid search, as without a re-ranker
    embedded = query.get()
    params: dict[str, Any] = {
        "team": team_id,
        # A team with no published article yet (or not seen yet by this process): the
        # project's language.
        "configs": list(articles.configs) or [search_config(settings.LANGUAGE_CODE)],
        "text": text,
        "candidates": candidates,
        "text_matches": TEXT_MATCHES,
        "focus": focus,
        # A re-ranker sees every candidate; otherwise only the best k come back.
        "limit": 3 * candidates if reranker is not None else k,
    }
    dimensions = None
    if embedded is not None:
        model, vector = embedded
        dimensions = int(vector.shape[0])
        params["model"] = model
        params["vector"] = VectorField().get_prep_value(vector)
    if tags:
        params["tags"] = list(tags)
    sql = retrieval_sql(dimensions=dimensions, focus=bool(focus), tags=bool(tags))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    passages = [
        Passage(
            chunk_id=row[0],
            article_id=row[1],
            article_version=row[2],
            article_title=row[3],
            heading=row[4],
            text=row[5],
            source_url=row[6],
            score=float(row[7]),
            vector_similarity=None if row[8] is None else float(row[8]),
            text_rank=None if row[9] is None else float(row[9]),
            vector_position=row[10],
            text_position=row[11],
            focus=bool(row[12]),
        )
        for row in rows
    ]
    if reranker is not None:
        passages = reranker.rerank(query=text, passages=passages)
    return passages[:k]


# --- The learned re-ranker's candidates -----------------------------------------------------

# The team's chunks nearest to the stripped question, team-wide: their centroid is the
# question's "aspect" (what is asked, whatever the article), a feature of the re-ranker, and
# their similarities are the detector's "does the knowledge base know about this at all".
TEAM_NEAREST = 50
# A stripped question's embedding, remembered per process for the detector and the retrieval
# of the same turn (one MiniLM call instead of two).
_STRIPPED_MAX = 512

_CANDIDATES_SQL = """WITH{query_cte},
focus_rows AS MATERIALIZED (
    SELECT c.id, c.article_id, c.position,
           c.embedding::vector({n}) <=> %(vector)s::vector({n}) AS distance,
           CASE WHEN c.search_vector @@ {ranking}
                THEN ts_rank_cd(c.search_vector, {ranking}) ELSE 0 END AS rank
    FROM drafting_knowledgechunk c{article_filter}
      AND c.article_id = ANY(%(focus)s::bigint[])
      AND c.embedding_model = %(model)s AND c.embedding_dimensions = {n}
),
focus_list AS (
    SELECT *, row_number() OVER (PARTITION BY article_id ORDER BY distance, id) AS nth
    FROM focus_rows
),
team_list AS MATERIALIZED (
    SELECT c.id, c.embedding::vector({n}) <=> %(vector)s::vector({n}) AS distance
    FROM drafting_knowledgechunk c{article_filter}
      AND c.embedding_model = %(model)s AND c.embedding_dimensions = {n}
    ORDER BY distance
    LIMIT %(team_nearest)s
)
SELECT true, c.id, c.article_id, a.version, a.title, c.heading, c.text, a.source_url,
       f.distance, f.rank, c.position, c.embedding::vector({n})::real[]
FROM focus_list f
JOIN drafting_knowledgechunk c ON c.id = f.id
JOIN drafting_knowledgearticle a ON a.id = c.article_id
WHERE f.nth <= %(per_article)s
UNION ALL
SELECT false, t.id, NULL, NULL, NULL, NULL, NULL, NULL, t.distance, NULL, NULL,
       c.embedding::vector({n})::real[]
FROM team_list t
JOIN drafting_knowledgechunk c ON c.id = t.id
"""

_TEAM_NEAREST_SQL = """
SELECT c.embedding::vector({n}) <=> %(vector)s::vector({n}) AS distance
FROM drafting_knowledgechunk c{article_filter}
  AND c.embedding_model = %(model)s AND c.embedding_dimensions = {n}
ORDER BY distance
LIMIT %(n)s"""


def candidates_sql(*, dimensions: int, tags: bool) -> str:
    """The re-ranker's one statement: the focus articles' chunks (at most per_article each,
    nearest first) with their text rank for the OR of the question's lexemes, and the team's
    `team_nearest` nearest chunks; vectors included. Parameters: team, configs, text,
    text_matches, focus, model, vector, per_article, team_nearest (and tags)."""
    article_filter = _ARTICLE_FILTER.format(
        tags=" AND a.tags && %(tags)s::varchar[]" if tags else ""
    )
    return _CANDIDATES_SQL.format(
        query_cte=_QUERY_CTE, n=int(dimensions), ranking=_RANKING, article_filter=article_filter
    )


_stripped: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
_stripped_lock = threading.Lock()


def stripped_vector(text: str) -> tuple[str, npt.NDArray[np.float32]] | None:
    """The embedder's vector of a stripped question, remembered per process (see
    _STRIPPED_MAX); None without an embedder or when it fails (QueryVector logs it)."""
    from drafting.engine.vectors import embedder  # the module tests replace the embedder in

    model = embedder()
    if model is None:
        return None
    key = (model.name, text)
    with _stripped_lock:
        found = _stripped.get(key)
    if found is not None:
        return model.name, found
    embedded = QueryVector(text).get()
    if embedded is None:
        return None
    vector = np.asarray(embedded[1], dtype=np.float32)
    with _stripped_lock:
        if len(_stripped) >= _STRIPPED_MAX:
            _stripped.clear()
        _stripped[key] = vector
    return embedded[0], vector


def _as_array(rows: Sequence[Sequence[float]], n: int) -> npt.NDArray[np.float32]:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), n)


def rerank_candidates(
    *,
    team_id: int,
    query: QueryVector,
    thread: Sequence[str] = (),
    tags: Sequence[str] = (),
    per_article: int,
) -> Candidates | None:
    """The learned re-ranker's candidates for the turn, in one statement (plus the stripped
    question's embedding, remembered, and the titles, remembered); None when no article is
    named in the thread or there is no embedder: the hybrid search then serves the turn."""
    text = query.text.strip()
    if not text:
        return None
    articles = team_articles(team_id)
    focus = focus_articles(articles, query=text, thread=thread)
    if not focus:
        return None
    stripped = articles.without_titles(text)
    embedded = stripped_vector(stripped or text)
    if embedded is None:
        return None
    model, vector = embedded
    n = int(vector.shape[0])
    params: dict[str, Any] = {
        "team": team_id,
        "configs": list(articles.configs) or [search_config(settings.LANGUAGE_CODE)],
        "text": stripped,
        "text_matches": TEXT_MATCHES,
        "focus": focus,
        "model": model,
        "vector": VectorField().get_prep_value(vector),
        "per_article": per_article,
        "team_nearest": TEAM_NEAREST,
    }
    if tags:
        params["tags"] = list(tags)
    with connection.cursor() as cursor:
        cursor.execute(candidates_sql(dimensions=n, tags=bool(tags)), params)
        rows = cursor.fetchall()
    order = {article_id: i for i, article_id in enumerate(focus)}
    focus_rows = sorted((r for r in rows if r[0]), key=lambda r: (order[r[2]], float(r[8]), r[1]))
    team_rows = sorted((r for r in rows if not r[0]), key=lambda r: (float(r[8]), r[1]))
    passages = tuple(
        Passage(
            chunk_id=r[1],
            article_id=r[2],
            article_version=r[3],
            article_title=r[4],
            heading=r[5],
            text=r[6],
            source_url=r[7],
            score=1.0 - float(r[8]),
            vector_similarity=1.0 - float(r[8]),
            text_rank=float(r[9]) if r[9] else None,
            vector_position=None,
            text_position=None,
            focus=True,
        )
        for r in focus_rows
    )
    turn = query.get()
    turn_vector = (
        np.asarray(turn[1], dtype=np.float32) if turn is not None and turn[0] == model else None
    )
    return Candidates(
        query=text,
        stripped=stripped,
        focus=tuple(focus),
        named_in_query=frozenset(articles.named_in(text)) & set(focus),
        passages=passages,
        positions=tuple(int(r[10]) for r in focus_rows),
        vectors=_as_array([r[11] for r in focus_rows], n),
        vector=vector,
        turn_vector=turn_vector,
        team_vectors=_as_array([r[11] for r in team_rows], n),
        team_similarities=np.asarray([1.0 - float(r[8]) for r in team_rows], dtype=np.float32),
    )


def team_nearest(
    *, team_id: int, text: str, tags: Sequence[str] = (), n: int = 5
) -> npt.NDArray[np.float32] | None:
    """Similarities of the team's `n` chunks nearest to the stripped `text`, best first (the
    needs-knowledge detector's "does the knowledge base speak of this"); None without an
    embedder. One statement, through the HNSW index."""
    articles = team_articles(team_id)
    stripped = articles.without_titles(text)
    embedded = stripped_vector(stripped or text)
    if embedded is None:
        return None
    model, vector = embedded
    dims = int(vector.shape[0])
    article_filter = _ARTICLE_FILTER.format(
        tags=" AND a.tags && %(tags)s::varchar[]" if tags else ""
    )
    sql = _TEAM_NEAREST_SQL.format(n=dims, article_filter=article_filter)
    params: dict[str, Any] = {
        "team": team_id,
        "model": model,
        "vector": VectorField().get_prep_value(vector),
        "n": n,
    }
    if tags:
        params["tags"] = list(tags)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        distances = sorted(float(r[0]) for r in cursor.fetchall())
    return np.asarray([1.0 - d for d in distances], dtype=np.float32)
