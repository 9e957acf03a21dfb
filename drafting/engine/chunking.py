"""Knowledge articles into chunks: what retrieval finds and what a draft cites.

Pure functions, no database:
- `search_config` picks the PostgreSQL text-search configuration for an article's language
  (the stemmer its tsvector is built with, and a query must use);
- `sections` turns a body (Markdown, HTML or plain text) into plain-text sections, each with
  its heading path;
- `chunk_article` cuts those into chunks to a token budget (settings.KNOWLEDGE_CHUNK_TOKENS):
  along headings first (a chunk never spans two), then paragraphs, then sentences for a
  paragraph over the budget; small consecutive paragraphs under one heading are merged up to
  it. A chunk's hash covers its heading and text only, so an edit re-embeds just what changed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from django.conf import settings

from drafting.engine.prompting import CHARS_PER_TOKEN

# ISO 639-1 codes of the languages PostgreSQL ships a text-search configuration for (its
# Snowball stemmers); any other language is searched with "simple" (lower-cased words, no
# stemming, no stop words), which still finds exact words.
SEARCH_CONFIGS: dict[str, str] = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}


def search_config(language: str) -> str:
    """The text-search configuration for an ISO 639-1 code ("en", "pt-BR", "DE"); "simple" for
    a language PostgreSQL has no stemmer for. The result is one of a fixed set of names, so it
    may be passed to SQL as a regconfig parameter."""
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    return SEARCH_CONFIGS.get(code, "simple")


# --- Bodies into sections -------------------------------------------------------------------

# A chunk's heading path: the headings above it, outermost first, joined by this.
HEADING_SEPARATOR = " › "
HEADING_MAX_CHARS = 300  # KnowledgeChunk.heading's max_length


@dataclass(frozen=True)
class Section:
    """The paragraphs under one heading, as plain text. `headings` is the path to it,
    outermost first (empty before the body's first heading)."""

    headings: tuple[str, ...]
    paragraphs: tuple[str, ...]


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]*)[^)]*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_EMPHASIS = re.compile(r"(\*\*|\*|~~)(?=\S)(.+?)(?<=\S)\1")
# Underscores mark emphasis only at word edges: a product code like AB_12_C keeps its own.
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_CODE_SPAN = re.compile(r"`+([^`]+)`+")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _inline_markdown(line: str) -> str:
    """Markdown's inline markup to the words a reader sees: links keep their text, images their
    alt text, emphasis and code spans lose their markers, inline HTML tags go."""
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(r"\1", line)
    line = _AUTOLINK.sub(r"\1", line)
    line = _CODE_SPAN.sub(r"\1", line)
    line = _EMPHASIS.sub(r"\2", line)
    line = _UNDERSCORE_EMPHASIS.sub(r"\2", line)
    line = _HTML_TAG.sub("", line)
    return line


class _SectionBuilder:
    """Collects paragraphs under the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []  # (level, text) of the open headings
        self.paragraphs: list[str] = []
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def end_paragraph(self) -> None:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in self.lines).strip()
        self.lines = []
        if text:
            self.paragraphs.append(text)

    def heading(self, level: int, text: str) -> None:
        self.end_section()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        text = _SPACES.sub(" ", text).strip()
        if text:
            self.path.append((level, text))

    def end_section(self) -> None:
        self.end_paragraph()
        if self.paragraphs:
            headings = tuple(text for _, text in self.path)
            self.sections.append(Section(headings, tuple(self.paragraphs)))
        self.paragraphs = []

    def finish(self) -> list[Section]:
        self.end_section()
        return self.sections


def markdown_sections(body: str) -> list[Section]:
    """ATX (`## Heading`) and setext (underlined) headings start sections; blank lines end
    paragraphs; fenced code is kept as one paragraph (a `#` inside it is no heading). List
    items stay lines of their paragraph."""
    builder = _SectionBuilder()
    fence: str | None = None
    for raw in body.splitlines():
        if fence is not None:
            if raw.strip().startswith(fence):
                fence = None
                builder.end_paragraph()
            else:
                builder.line(raw)
            continue
        opened = _FENCE.match(raw)
        if opened:
            builder.end_paragraph()
            fence = opened.group(1)
            continue
        heading = _ATX_HEADING.match(raw)
        if heading:
            builder.heading(len(heading.group(1)), _inline_markdown(heading.group(2)))
            continue
        underline = _SETEXT.match(raw)
        if underline and len(builder.lines) == 1 and builder.lines[0].strip():
            title = builder.lines.pop()
            builder.heading(1 if underline.group(1)[0] == "=" else 2, _inline_markdown(title))
            continue
        if not raw.strip():
            builder.end_paragraph()
            continue
        builder.line(_inline_markdown(raw))
    return builder.finish()


def text_sections(body: str) -> list[Section]:
    """Plain text: paragraphs separated by blank lines, no headings."""
    builder = _SectionBuilder()
    for raw in body.splitlines():
        if raw.strip():
            builder.line(raw)
        else:
            builder.end_paragraph()
    return builder.finish()


# Elements whose start or end ends a paragraph; the rest (a, b, span…) flow within one.
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "br",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
        "caption",
    ]
)
# Elements whose content is no text for a reader.
_DROPPED = frozenset(
    ["script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas"]
)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = _SectionBuilder()
        self.dropping = 0  # depth inside dropped elements
        self.heading_level = 0
        self.heading_text: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        self.first_h1: str | None = None
        self.pre = 0
        self.current: list[str] = []  # the text of the line being read

    def _flush_line(self) -> None:
        text = "".join(self.current)
        self.current = []
        if self.pre:
            for line in text.split("\n"):
                self.builder.line(line)
        elif text.strip():
            self.builder.line(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _DROPPED:
            self.dropping += 1
            return
        if self.dropping:
            return
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._flush_line()
            self.heading_level = int(tag[1])
            self.heading_text = []
        elif tag in _BLOCKS:
            self._flush_line()
            if tag == "li":
                # A list stays one paragraph, an item a line of it.
                self.current.append("- ")
                return
            if tag == "br":
                return
            self.builder.end_paragraph()
            if tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr/>: a void element has no end tag to wait for.
        if tag in _BLOCKS and not self.dropping:
            self._flush_line()
            if tag != "br":
                self.builder.end_paragraph()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _DROPPED:
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping:
            return
        if self.heading_level and tag == f"h{self.heading_level}":
            text = _SPACES.sub(" ", "".join(self.heading_text)).strip()
            if self.heading_level == 1 and self.first_h1 is None and text:
                self.first_h1 = text
            self.builder.heading(self.heading_level, text)
            self.heading_level = 0
        elif tag in _BLOCKS:
            self._flush_line()
            if tag == "li":
                return
            self.builder.end_paragraph()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
            return
        if self.dropping:
            return
        if self.heading_level:
            self.heading_text.append(data)
        elif self.pre:
            self.current.append(data)
        else:
            self.current.append(_SPACES.sub(" ", data.replace("\n", " ")))

    def result(self) -> list[Section]:
        self._flush_line()
        return self.builder.finish()


@dataclass(frozen=True)
class HTMLDocument:
    title: str  # <title>, else the first <h1>, else ""
    sections: list[Section]


def html_document(body: str) -> HTMLDocument:
    """HTML to sections with the standard library's parser (tolerant of broken markup):
    h1-h6 start sections, block elements end paragraphs, script/style and the like are
    dropped, entities decoded."""
    parser = _HTMLText()
    parser.feed(body)
    parser.close()
    sections = parser.result()
    title = _SPACES.sub(" ", "".join(parser.title)).strip() or parser.first_h1 or ""
    return HTMLDocument(title=title, sections=sections)


def sections(body: str, body_format: str) -> list[Section]:
    """A body in one of KnowledgeArticle.Format's values ("markdown", "html", "text")."""
    if body_format == "html":
        return html_document(body).sections
    if body_format == "text":
        return text_sections(body)
    if body_format == "markdown":
        return markdown_sections(body)
    raise ValueError(f"Unknown body format {body_format!r}")


# --- Sections into chunks -------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSpec:
    """A chunk as the chunker makes it; KnowledgeChunk rows are kept in step with these."""

    position: int
    heading: str
    text: str
    content_hash: str


def chunk_hash(heading: str, text: str) -> str:
    """What says whether a chunk changed: its heading and text only, nothing about where it is,
    so a paragraph inserted above leaves every chunk below as it was (and its vector)."""
    return hashlib.sha256(f"{heading}\x1f{text}".encode()).hexdigest()


def article_hash(*, title: str, body: str, body_format: str, language: str) -> str:
    """KnowledgeArticle.content_hash: everything the chunks and their search vectors are made
    from (the title is in every chunk's tsvector and embedded text; the language picks the
    stemmer). Tags, link and published state are not: changing them needs no re-indexing."""
    parts = (title.strip(), body_format, language.strip().lower(), body)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+|\n+")


def _split_long(text: str, budget: int) -> list[str]:
    """A paragraph over the budget, cut at sentence ends and packed back to the budget; a
    sentence still over it is cut between words (or, without spaces, anywhere)."""
    pieces: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        while len(sentence) > budget:
            cut = sentence.rfind(" ", 0, budget + 1)
            if cut <= 0:
                cut = budget
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return _pack(pieces, budget, joiner=" ")


def _pack(pieces: list[str], budget: int, *, joiner: str) -> list[str]:
    """Consecutive pieces joined while the result stays within the budget."""
    packed: list[str] = []
    for piece in pieces:
        if packed and len(packed[-1]) + len(joiner) + len(piece) <= budget:
            packed[-1] = f"{packed[-1]}{joiner}{piece}"
        else:
            packed.append(piece)
    return packed


def heading_path(headings: tuple[str, ...], *, title: str = "") -> str:
    """The headings joined, outermost first; a top heading that repeats the article's title is
    left out (a Markdown article's `# Title` line), since the title is stored beside it."""
    if headings and title and headings[0].casefold() == title.strip().casefold():
        headings = headings[1:]
    path = HEADING_SEPARATOR.join(headings)
    if len(path) > HEADING_MAX_CHARS:
        path = path[: HEADING_MAX_CHARS - 1].rstrip() + "…"
    return path


def chunk_sections(
    parts: list[Section], *, title: str = "", max_tokens: int | None = None
) -> list[ChunkSpec]:
    """Sections into chunks of at most `max_tokens` estimated tokens of text (the prompt's
    estimate: CHARS_PER_TOKEN characters each). Steps, per section: paragraphs over the budget
    are cut at sentence ends; then consecutive paragraphs are merged up to the budget. Chunks
    never span two sections, so each has one heading path."""
    tokens = settings.KNOWLEDGE_CHUNK_TOKENS if max_tokens is None else max_tokens
    budget = max(1, tokens) * CHARS_PER_TOKEN
    chunks: list[ChunkSpec] = []
    for section in parts:
        heading = heading_path(section.headings, title=title)
        pieces: list[str] = []
        for paragraph in section.paragraphs:
            pieces.extend(
                [paragraph] if len(paragraph) <= budget else _split_long(paragraph, budget)
            )
        for text in _pack(pieces, budget, joiner="\n\n"):
            chunks.append(ChunkSpec(len(chunks), heading, text, chunk_hash(heading, text)))
    return chunks


def chunk_article(
    *, title: str, body: str, body_format: str, max_tokens: int | None = None
) -> list[ChunkSpec]:
    """An article's body into its chunks, in order (positions from 0)."""
    return chunk_sections(sections(body, body_format), title=title, max_tokens=max_tokens)


def embedding_text(*, title: str, heading: str, text: str) -> str:
    """What a chunk's vector is made from: the article's title and the heading path give a
    passage its subject ("Returns › Refunds: ... 14 days"), which the paragraph alone often
    lacks."""
    context = HEADING_SEPARATOR.join(part for part in (title.strip(), heading) if part)
    return f"{context}\n\n{text}" if context else text
