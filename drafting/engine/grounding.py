"""Grounded drafts: the team's passages in the prompt, the draft's citations, and knowing when
nothing is known.

- Passages (drafting.engine.retrieval) go into the system prompt numbered best first,
  `[n] Title — heading: text`, under an instruction to answer from them only, cite `[n]` after
  the sentences they support, and say so when they do not hold the answer (`passage_lines`,
  `KNOWLEDGE_HEADER`; drafting.engine.prompting fits them into each tier's budget).
- Citations: a model writes `[1]`, `[1, 3]`, `[1][2]`, `[1-2]`, `【1】` or `[source 1]`;
  `cited` returns the numbers the attempt was shown, ordered by first use and unique, and the
  draft CLEAN: every marker out, spacing mended. The agent sends that text to the customer (and
  the edit distance is measured on it); the numbers live beside it (DraftAttempt.citations).
- Relevance: a passage is relevant when its cosine similarity to the turn reaches
  KNOWLEDGE_MIN_SIMILARITY; without a vector (the chunk not embedded yet, or embeddings off)
  a full-text match is all there is, so it counts. With a vector, a text match alone does not:
  one shared word ("order") matches half a help center.
- Needing knowledge: a `NeedDetector` (the team's trained tens-of-shot classifier,
  drafting.learning.knowledge) gives P(the turn needs the knowledge base). Without one the
  rule is `looks_like_question`: a turn that asks something (a question mark, or opening with
  an interrogative or auxiliary verb) is taken to need knowledge when the team has articles;
  thanks, greetings and statements are not. It errs towards asking, which only matters when
  nothing relevant is found, and then the policy's no-knowledge rule (chosen by the team)
  decides; a team that finds it too eager labels tens of turns and trains the detector.
- Signals for the scorers (`grounding_signals`): the best passage's similarity and fused score,
  whether the draft cites, and the share of the draft's content words found in the passages it
  cites (a cited draft that says things its passages do not is less grounded than it claims).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from drafting.engine.vectors import QueryVector

KNOWLEDGE_HEADER = (
    "Passages from our knowledge base, numbered. Answer the customer from these passages only, "
    "and cite the passage after each sentence that uses it, as [1] or [1, 3]. If they do not "
    "contain the answer, say that you will check with the team instead of guessing."
)


class PassageLike(Protocol):
    """What grounding reads of a retrieved passage (drafting.engine.retrieval.Passage)."""

    @property
    def article_title(self) -> str: ...
    @property
    def heading(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def vector_similarity(self) -> float | None: ...
    @property
    def text_rank(self) -> float | None: ...


P = TypeVar("P", bound=PassageLike)


class NeedDetector(Protocol):
    """P(the customer turn needs the knowledge base), from a trained model; None when it cannot
    judge this turn (its embedder is not the one in force, the embedding failed)."""

    @property
    def classifier_id(self) -> int: ...

    def probability(self, query: QueryVector) -> float | None: ...


@dataclass(frozen=True)
class StoredPassage:
    """A passage stored with a draft (DraftPassage), read back as a PassageLike: exploration,
    an adapter in shadow and the distillation export render it as the cascade did."""

    article_title: str
    heading: str
    text: str
    score: float
    vector_similarity: float | None
    text_rank: float | None = None


def passage_line(number: int, passage: PassageLike) -> str:
    """`[n] Title — heading: text`, as the model sees the passage."""
    where = (
        f"{passage.article_title} — {passage.heading}" if passage.heading else passage.article_title
    )
    return f"[{number}] {where}: {passage.text.strip()}"


def passage_lines(passages: Sequence[PassageLike]) -> list[str]:
    return [passage_line(n, p) for n, p in enumerate(passages, start=1)]


# --- Citations ----------------------------------------------------------------------------------

_OPEN, _CLOSE = r"[\[【［〔]", r"[\]】］〕]"
_NUMBERS = r"\d{1,3}(?:\s*(?:[-–,;，、]|and)\s*\d{1,3})*"
# One marker: brackets around numbers, optionally named ("source 1", "passage: 2", "ref 3").
_MARKER = rf"{_OPEN}\s*(?:(?:sources?|passages?|refs?|references?)\s*:?\s*)?{_NUMBERS}\s*{_CLOSE}"
_MARKERS = re.compile(rf"(?P<before>[^\S\n]*)(?P<markers>{_MARKER}(?:[^\S\n]*{_MARKER})*)", re.I)
_ONE_MARKER = re.compile(_MARKER, re.IGNORECASE)
_RANGE = re.compile(r"(\d{1,3})\s*[-–]\s*(\d{1,3})")
_DIGITS = re.compile(r"\d{1,3}")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[^\S\n]+([.,;:!?)])")
_SPACES = re.compile(r"[^\S\n]{2,}")
# A range longer than this is not a citation a model meant ("[1-300]"): its ends only.
_MAX_RANGE = 10


@dataclass(frozen=True)
class Cited:
    text: str  # the draft with every citation marker removed
    citations: tuple[int, ...]  # passage numbers shown to the attempt, by first use, unique


def _numbers(marker: str) -> list[int]:
    numbers: list[int] = []
    rest = marker
    for match in _RANGE.finditer(marker):
        low, high = int(match.group(1)), int(match.group(2))
        if low <= high and high - low <= _MAX_RANGE:
            numbers += range(low, high + 1)
        else:
            numbers += [low, high]
        rest = rest.replace(match.group(0), " ")
    numbers += [int(d) for d in _DIGITS.findall(rest)]
    return numbers


def cited(text: str, *, shown: int) -> Cited:
    """The draft's citations of passages 1..`shown` and its text without markers.

    Steps: find runs of markers (with the spaces before them); collect their numbers in order
    (ranges expanded), keeping those in 1..shown once each (numbers the attempt was not shown
    are no citation: the model invented them); cut every run out, keeping a space only between
    two words it separated; mend spaces before punctuation and doubled spaces.
    """
    numbers: list[int] = []
    pieces: list[str] = []
    last = 0
    for match in _MARKERS.finditer(text):
        for marker in _ONE_MARKER.findall(match.group("markers")):
            numbers += _numbers(marker)
        start, end = match.start(), match.end()
        pieces.append(text[last:start])
        before = text[start - 1] if start > 0 else ""
        after = text[end] if end < len(text) else ""
        if before.isalnum() and after.isalnum():
            pieces.append(" ")
        elif not before or before == "\n":
            # A marker opening a line: the spaces after it go too.
            while end < len(text) and text[end] in " \t":
                end += 1
        last = end
    if not pieces:
        return Cited(text=text, citations=())
    pieces.append(text[last:])
    clean = _SPACES.sub(" ", _SPACE_BEFORE_PUNCTUATION.sub(r"\1", "".join(pieces)))
    kept = tuple(dict.fromkeys(n for n in numbers if 1 <= n <= shown))
    return Cited(text=clean.strip(), citations=kept)


# --- Relevance and need --------------------------------------------------------------------------


def is_relevant(passage: PassageLike, *, min_similarity: float) -> bool:
    """Relevant to the turn (see the module docstring for why a text match alone counts only
    without a vector)."""
    if passage.vector_similarity is not None:
        return passage.vector_similarity >= min_similarity
    return passage.text_rank is not None and passage.text_rank > 0


def relevant(passages: Sequence[P], *, min_similarity: float) -> list[P]:
    """The relevant passages, in their order."""
    return [p for p in passages if is_relevant(p, min_similarity=min_similarity)]


_QUESTION_OPENERS = frozenset(
    [
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "is",
        "are",
        "am",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "any",
        "anyone",
        "whats",
        "wheres",
        "hows",
    ]
)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def looks_like_question(text: str) -> bool:
    """The rule without a trained detector: the turn asks something — a question mark (any
    script's), or a sentence opening with an interrogative or an auxiliary verb."""
    if any(mark in text for mark in "?？¿"):
        return True
    for sentence in re.split(r"[.!\n]+", text):
        words = _WORD.findall(sentence.casefold())
        if words and words[0].replace("'", "") in _QUESTION_OPENERS:
            return True
    return False


# --- Signals for the scorers ---------------------------------------------------------------------

# Words that carry no fact: the overlap counts what the draft claims, not how it is phrased.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "having",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "shall",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "we",
        "our",
        "ours",
        "you",
        "your",
        "yours",
        "i",
        "me",
        "my",
        "he",
        "she",
        "they",
        "them",
        "their",
        "his",
        "her",
        "not",
        "no",
        "yes",
        "there",
        "here",
        "what",
        "when",
        "where",
        "which",
        "who",
        "how",
        "why",
        "all",
        "any",
        "some",
        "each",
        "more",
        "most",
        "very",
        "just",
        "also",
        "than",
        "too",
        "about",
        "into",
        "over",
        "under",
        "again",
        "once",
        "only",
        "own",
        "same",
        "such",
        "both",
        "few",
        "other",
        "thanks",
        "thank",
        "please",
        "hello",
        "hi",
        "dear",
        "regards",
        "happy",
        "help",
        "let",
        "know",
        "us",
    ]
)
_CONTENT_WORD = re.compile(r"[^\W_]{3,}|\d+")


def content_words(text: str) -> set[str]:
    return {w for w in (m.casefold() for m in _CONTENT_WORD.findall(text)) if w not in _STOPWORDS}


def overlap(draft: str, sources: Sequence[str]) -> float | None:
    """Share of the draft's content words that its sources contain; None for a draft without
    content words (nothing claimed, nothing to check)."""
    words = content_words(draft)
    if not words:
        return None
    found = content_words(" ".join(sources))
    return len(words & found) / len(words)


@dataclass(frozen=True)
class GroundingContext:
    """What the scorers know of a draft's grounding beyond its text: the turn's need for
    knowledge (True/False; None when it was not judged) and the passages retrieved for it, best
    first — their text, fused score and vector similarity. Per attempt, `shown` passages fitted
    its prompt and it cited `citations`."""

    needs_knowledge: bool | None = None
    passages: tuple[tuple[str, float, float | None], ...] = ()
    shown: int = 0
    citations: tuple[int, ...] = ()


@dataclass(frozen=True)
class GroundingSignals:
    top_similarity: float | None  # the best passage's cosine to the turn (None: no vector)
    top_score: float | None  # its fused score (None: no passage)
    cited: bool
    overlap: float | None  # None: no passage shown, or the draft claims no content word

    @property
    def grounded(self) -> bool:
        return self.top_score is not None


def grounding_signals(context: GroundingContext | None, draft_text: str) -> GroundingSignals:
    """The signals of one attempt's (clean) draft; overlap against the passages it cites, or all
    it was shown when it cites none (a draft that uses its passages without citing them is
    still grounded, and one that ignores them is not)."""
    if context is None or not context.passages or context.shown == 0:
        return GroundingSignals(None, None, cited=False, overlap=None)
    shown = context.passages[: context.shown]
    top = shown[0]
    sources = [shown[n - 1][0] for n in context.citations if n <= len(shown)] or [
        text for text, _, _ in shown
    ]
    return GroundingSignals(
        top_similarity=top[2],
        top_score=top[1],
        cited=bool(context.citations),
        overlap=overlap(draft_text, sources),
    )
