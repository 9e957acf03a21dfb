"""Uploaded knowledge files into article and macro inputs, with every problem found at once.

Formats: `.md` (optional front matter between `---` lines), `.html`/`.htm`, `.txt`, `.csv`,
`.json`, and `.zip` archives of these (folders inside are fine). A file that holds one article
(.md, .html, .txt) gets its name as the article's external id unless its front matter says
otherwise; inside a ZIP the name is the path within the archive, so re-importing the same
archive updates the same articles. Nothing here touches the database: `parse_files` returns
inputs and `FileError`s, and the caller (drafting.knowledge) writes only when there is no error.

Limits: each file, and a ZIP's unpacked total, at most settings.KNOWLEDGE_IMPORT_MAX_BYTES
(a ZIP's declared sizes are not trusted: members are read with a bounded read). Paths that
climb out of the archive, absolute paths, nested archives and unknown extensions are refused.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from drafting.engine.chunking import html_document
from drafting.models import KnowledgeArticle, Macro

ARTICLE_EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
ARTICLE_EXTENSIONS[".txt"] = "text"
DATA_EXTENSIONS = (".csv", ".json")
EXTENSIONS = (*ARTICLE_EXTENSIONS, *DATA_EXTENSIONS, ".zip")

ARTICLE_FIELDS = (
    "external_id",
    "title",
    "body",
    "tags",
    "language",
    "source_url",
    "published",
    "format",
)
MACRO_FIELDS = ("external_id", "title", "body", "tags", "intent", "language", "active")
FRONT_MATTER_FIELDS = ("external_id", "title", "tags", "language", "source_url", "published")
FORMATS = {
    "markdown": "markdown",
    "md": "markdown",
    "html": "html",
    "text": "text",
    "txt": "text",
    "plain": "text",
}
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
# An id or a title is one line of text; PostgreSQL stores no NUL in any text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


@dataclass(frozen=True)
class ArticleInput:
    external_id: str
    title: str
    body: str
    body_format: str = KnowledgeArticle.Format.MARKDOWN.value
    tags: tuple[str, ...] = ()
    language: str = "en"
    source_url: str = ""
    published: bool = True


@dataclass(frozen=True)
class MacroInput:
    external_id: str
    title: str
    body: str
    tags: tuple[str, ...] = ()
    intent: str = ""  # the name of one of the team's intents, or ""
    language: str = "en"
    active: bool = True


@dataclass(frozen=True)
class FileError:
    name: str  # the file (and, inside a ZIP, the path within it)
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


@dataclass
class ParsedFile:
    """What one uploaded or named file holds (a ZIP's members are files of their own)."""

    name: str
    articles: list[ArticleInput] = field(default_factory=list)
    macros: list[MacroInput] = field(default_factory=list)


@dataclass
class ParsedUpload:
    files: list[ParsedFile]
    errors: list[FileError]

    @property
    def articles(self) -> list[ArticleInput]:
        return [article for parsed in self.files for article in parsed.articles]

    @property
    def macros(self) -> list[MacroInput]:
        return [macro for parsed in self.files for macro in parsed.macros]


class _Problem(Exception):
    """One problem with a file: becomes its FileError."""


# --- Validation: the one home of what an article or a macro must be ----------------------------


def _max_length(model: Any, name: str) -> int:
    length = model._meta.get_field(name).max_length
    assert isinstance(length, int)
    return length


def _tag_max_length(model: Any) -> int:
    length = model._meta.get_field("tags").base_field.max_length
    assert isinstance(length, int)
    return length


def article_errors(article: ArticleInput) -> dict[str, list[str]]:
    """Field errors of an article, by field name (empty: valid). The API, the admin and the
    file import all check here."""
    errors: dict[str, list[str]] = {}
    _check_text(
        errors, "external_id", article.external_id, _max_length(KnowledgeArticle, "external_id")
    )
    _check_text(errors, "title", article.title, _max_length(KnowledgeArticle, "title"))
    _check_body(errors, article.body)
    if article.body_format not in KnowledgeArticle.Format.values:
        errors.setdefault("format", []).append(
            f"Unknown format {article.body_format!r}: one of {', '.join(KnowledgeArticle.Format.values)}."
        )
    _check_tags(errors, article.tags, _tag_max_length(KnowledgeArticle))
    _check_language(errors, article.language, _max_length(KnowledgeArticle, "language"))
    if article.source_url:
        limit = _max_length(KnowledgeArticle, "source_url")
        if len(article.source_url) > limit:
            errors.setdefault("source_url", []).append(f"Longer than {limit} characters.")
        else:
            try:
                URLValidator(schemes=["http", "https"])(article.source_url)
            except ValidationError:
                errors.setdefault("source_url", []).append("Not an http(s) URL.")
    return errors


def macro_errors(macro: MacroInput) -> dict[str, list[str]]:
    """Field errors of a macro, by field name (empty: valid). Whether `intent` names one of the
    team's intents is the writer's to check (it needs the database)."""
    errors: dict[str, list[str]] = {}
    _check_text(errors, "external_id", macro.external_id, _max_length(Macro, "external_id"))
    _check_text(errors, "title", macro.title, _max_length(Macro, "title"))
    _check_body(errors, macro.body)
    _check_tags(errors, macro.tags, _tag_max_length(Macro))
    _check_language(errors, macro.language, _max_length(Macro, "language"))
    return errors


def _check_text(errors: dict[str, list[str]], name: str, value: str, limit: int) -> None:
    if _CONTROL.search(value):
        errors.setdefault(name, []).append("Control characters are not allowed.")
    elif not value.strip():
        errors.setdefault(name, []).append("This field is required.")
    elif len(value) > limit:
        errors.setdefault(name, []).append(f"Longer than {limit} characters.")
    elif value != value.strip():
        errors.setdefault(name, []).append("Leading or trailing spaces.")


def _check_body(errors: dict[str, list[str]], body: str) -> None:
    if "\x00" in body:
        errors.setdefault("body", []).append("NUL characters are not allowed.")
    elif not body.strip():
        errors.setdefault("body", []).append("The body is empty.")


def _check_tags(errors: dict[str, list[str]], tags: Sequence[str], limit: int) -> None:
    for tag in tags:
        if not tag.strip() or _CONTROL.search(tag):
            errors.setdefault("tags", []).append("An empty tag, or one with control characters.")
        elif len(tag) > limit:
            errors.setdefault("tags", []).append(
                f"Tag {tag[:20]!r}… is longer than {limit} characters."
            )


def _check_language(errors: dict[str, list[str]], language: str, limit: int) -> None:
    if len(language) > limit or not _LANGUAGE.fullmatch(language):
        errors.setdefault("language", []).append(
            f"{language[:20]!r} is no language code (ISO 639-1, e.g. 'en' or 'pt-BR')."
        )


def _describe(errors: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())


# --- Values as files spell them ---------------------------------------------------------------


def parse_tags(value: Any) -> tuple[str, ...]:
    """A list, or a string of tags separated by commas or semicolons (`[a, b]` too)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.strip().removeprefix("[").removesuffix("]")
        items: Iterable[Any] = re.split(r"[,;]", value)
    elif isinstance(value, list):
        items = value
    else:
        raise _Problem(f"tags: expected a list or a comma-separated string, got {value!r}")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _Problem(f"tags: {item!r} is not text")
        tag = item.strip().strip("'\"").strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def parse_bool(name: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Problem(f"{name}: {value!r} is neither true nor false")


def _text(name: str, value: Any, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Problem(f"{name}: expected text, got {type(value).__name__}")
    return str(value).strip() if name != "body" else str(value)


def _format(value: Any, default: str) -> str:
    text = _text("format", value).lower()
    if not text:
        return default
    if text not in FORMATS:
        raise _Problem(f"format: {text!r} is not one of markdown, html, text")
    return FORMATS[text]


def _article(record: Mapping[str, Any], *, default_format: str = "markdown") -> ArticleInput:
    unknown = sorted(set(record) - set(ARTICLE_FIELDS) - {"kind"})
    if unknown:
        raise _Problem(
            f"unknown field(s) {', '.join(unknown)} (known: {', '.join(ARTICLE_FIELDS)})"
        )
    article = ArticleInput(
        external_id=_text("external_id", record.get("external_id")),
        title=_text("title", record.get("title")),
        body=_text("body", record.get("body")),
        body_format=_format(record.get("format"), default_format),
        tags=parse_tags(record.get("tags")),
        language=_text("language", record.get("language")) or "en",
        source_url=_text("source_url", record.get("source_url")),
        published=parse_bool("published", record.get("published"), True),
    )
    errors = article_errors(article)
    if errors:
        raise _Problem(_describe(errors))
    return article


def _macro(record: Mapping[str, Any]) -> MacroInput:
    unknown = sorted(set(record) - set(MACRO_FIELDS) - {"kind"})
    if unknown:
        raise _Problem(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(MACRO_FIELDS)})")
    macro = MacroInput(
        external_id=_text("external_id", record.get("external_id")),
        title=_text("title", record.get("title")),
        body=_text("body", record.get("body")),
        tags=parse_tags(record.get("tags")),
        intent=_text("intent", record.get("intent")),
        language=_text("language", record.get("language")) or "en",
        active=parse_bool("active", record.get("active"), True),
    )
    errors = macro_errors(macro)
    if errors:
        raise _Problem(_describe(errors))
    return macro


# --- One file ---------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Problem(f"not UTF-8 text (byte {exc.start})") from exc


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """`---` / `key: value` lines / `---` at the very top: the values and the rest. Simple
    on purpose (no YAML dependency): one `key: value` per line, `#` comments, quotes
    stripped; lists as `[a, b]` or `a, b`."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        raise _Problem("front matter opened with '---' is never closed")
    values: dict[str, str] = {}
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or not key:
            raise _Problem(f"front matter line {number}: expected 'key: value'")
        if key not in FRONT_MATTER_FIELDS:
            raise _Problem(
                f"front matter line {number}: unknown key {key!r} "
                f"(known: {', '.join(FRONT_MATTER_FIELDS)})"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values, "\n".join(lines[end + 1 :])


def _title_from_name(name: str) -> str:
    return re.sub(r"[-_]+", " ", PurePosixPath(name).stem).strip() or name


_MD_TITLE = re.compile(r"^ {0,3}# +(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _single_article(name: str, text: str, body_format: str) -> ArticleInput:
    meta: dict[str, Any] = {}
    body = text
    if body_format == "markdown":
        meta, body = _front_matter(text)
        found = _MD_TITLE.search(body)
        default_title = found.group(1).strip() if found else ""
    elif body_format == "html":
        default_title = html_document(text).title
    else:
        default_title = ""
    record: dict[str, Any] = {
        "external_id": meta.get("external_id") or name,
        "title": meta.get("title") or default_title or _title_from_name(name),
        "body": body,
        "format": body_format,
        **{
            key: meta[key] for key in ("tags", "language", "source_url", "published") if key in meta
        },
    }
    return _article(record, default_format=body_format)


def _is_macro(record: Mapping[str, Any], default: bool) -> bool:
    kind = str(record.get("kind") or "").strip().lower()
    if kind in ("", None):
        return default
    if kind not in ("article", "macro"):
        raise _Problem(f"kind: {kind!r} is neither 'article' nor 'macro'")
    return kind == "macro"


def _records(
    parsed: ParsedFile, records: Iterable[tuple[str, Mapping[str, Any]]], *, macros: bool
) -> list[FileError]:
    """Each record into an article or a macro; a problem names the record (row or index)."""
    errors: list[FileError] = []
    for where, record in records:
        try:
            if _is_macro(record, macros):
                parsed.macros.append(_macro(record))
            else:
                parsed.articles.append(_article(record))
        except _Problem as exc:
            errors.append(FileError(parsed.name, f"{where}: {exc}"))
    return errors


def _csv(parsed: ParsedFile, text: str) -> list[FileError]:
    """A header row, then one article or macro a row: macros when the file's name says
    "macro" or a `kind` column says so. Empty cells are absent values."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if not header:
            raise _Problem("empty CSV: expected a header row")
        if len(set(header)) != len(header):
            raise _Problem("the header names a column twice")
        missing = [name for name in ("external_id", "title", "body") if name not in header]
        if missing:
            raise _Problem(f"the header lacks {', '.join(missing)}")
        unknown = [name for name in header if name not in {*ARTICLE_FIELDS, *MACRO_FIELDS, "kind"}]
        if unknown:
            raise _Problem(f"unknown column(s) {', '.join(unknown)}")
        rows: list[tuple[str, Mapping[str, Any]]] = []
        for row in reader:
            where = f"row {reader.line_num}"
            if None in row:
                raise _Problem(f"{where}: more cells than the header has columns")
            values = {
                name: value for name, value in zip(header, row.values(), strict=True) if value
            }
            if values:  # a blank line is no record
                rows.append((where, values))
    except csv.Error as exc:
        raise _Problem(f"not valid CSV: {exc}") from exc
    macros = "macro" in PurePosixPath(parsed.name).name.lower()
    return _records(parsed, rows, macros=macros)


def _json(parsed: ParsedFile, text: str) -> list[FileError]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Problem(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise _Problem("not valid JSON: nested too deeply") from exc
    if isinstance(data, list):
        groups = {"articles": data}
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {"articles", "macros"})
        if unknown:
            raise _Problem(
                f"unknown key(s) {', '.join(unknown)}: expected 'articles' and/or 'macros'"
            )
        groups = data
    else:
        raise _Problem("expected a list of articles or an object with 'articles' and 'macros'")
    errors: list[FileError] = []
    for group in ("articles", "macros"):
        items = groups.get(group, [])
        if not isinstance(items, list):
            errors.append(FileError(parsed.name, f"{group}: expected a list"))
            continue
        records: list[tuple[str, Mapping[str, Any]]] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(FileError(parsed.name, f"{group}[{index}]: expected an object"))
                continue
            records.append(
                (f"{group}[{index}]", {**item, "kind": "macro" if group == "macros" else "article"})
            )
        errors.extend(_records(parsed, records, macros=group == "macros"))
    return errors


def _parse_one(name: str, data: bytes) -> tuple[ParsedFile, list[FileError]]:
    """A file that is not a ZIP. Problems with the whole file end its parse; problems with
    one record (a CSV row, a JSON item) are collected and the other records still read."""
    parsed = ParsedFile(name)
    suffix = PurePosixPath(name).suffix.lower()
    try:
        if len(data) > settings.KNOWLEDGE_IMPORT_MAX_BYTES:
            raise _Problem(f"larger than {settings.KNOWLEDGE_IMPORT_MAX_BYTES} bytes")
        text = _decode(data)
        if suffix in ARTICLE_EXTENSIONS:
            parsed.articles.append(_single_article(name, text, ARTICLE_EXTENSIONS[suffix]))
            return parsed, []
        if suffix == ".csv":
            return parsed, _csv(parsed, text)
        if suffix == ".json":
            return parsed, _json(parsed, text)
        raise _Problem(
            f"unknown file type {suffix or '(none)'}: use one of {', '.join(EXTENSIONS)}"
        )
    except _Problem as exc:
        return ParsedFile(name), [FileError(name, str(exc))]


def _safe_member(name: str) -> str:
    """The member's path if it stays inside the archive, else a problem."""
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _Problem(f"{name}: absolute or Windows path refused")
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        raise _Problem(f"{name}: a path leaving the archive ('..') is refused")
    return "/".join(part for part in parts if part not in ("", "."))


def _skipped_member(path: str) -> bool:
    """Folders and the bookkeeping files archivers add (macOS resource forks, hidden files)."""
    parts = path.split("/")
    return (
        path.endswith("/") or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)
    )


def _parse_zip(name: str, data: bytes) -> tuple[list[ParsedFile], list[FileError]]:
    limit = settings.KNOWLEDGE_IMPORT_MAX_BYTES
    files: list[ParsedFile] = []
    errors: list[FileError] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        return [], [FileError(name, f"not a valid ZIP archive ({exc})")]
    unpacked = 0
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            try:
                path = _safe_member(info.filename)
            except _Problem as exc:
                errors.append(FileError(name, str(exc)))
                continue
            if _skipped_member(path):
                continue
            member = f"{name}/{path}"
            suffix = PurePosixPath(path).suffix.lower()
            if suffix == ".zip":
                errors.append(FileError(member, "archives inside archives are not read"))
                continue
            if suffix not in EXTENSIONS:
                errors.append(FileError(member, f"unknown file type {suffix or '(none)'}"))
                continue
            if info.flag_bits & 0x1:
                errors.append(FileError(member, "encrypted members cannot be read"))
                continue
            # The declared size may lie (a zip bomb): read at most what is still allowed.
            allowed = limit - unpacked
            try:
                with archive.open(info) as stream:
                    content = stream.read(min(allowed, limit) + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                errors.append(FileError(member, f"cannot be unpacked ({exc})"))
                continue
            if len(content) > limit:
                errors.append(FileError(member, f"larger than {limit} bytes unpacked"))
                continue
            if len(content) > allowed:
                errors.append(FileError(name, f"unpacks to more than {limit} bytes; refused"))
                break
            unpacked += len(content)
            # The default external id is the path inside the archive; reports name both.
            parsed, problems = _parse_one(path, content)
            parsed.name = member
            errors.extend(FileError(member, problem.message) for problem in problems)
            files.append(parsed)
    if not files and not errors:
        errors.append(FileError(name, "the archive holds no knowledge files"))
    return files, errors


def parse_files(files: Sequence[tuple[str, bytes]]) -> ParsedUpload:
    """Every file parsed, every problem collected (a file's name, a message). External ids
    repeated across the upload are a problem too: which one should win?"""
    parsed: list[ParsedFile] = []
    errors: list[FileError] = []
    for name, data in files:
        if PurePosixPath(name).suffix.lower() == ".zip":
            if len(data) > settings.KNOWLEDGE_IMPORT_MAX_BYTES:
                errors.append(
                    FileError(name, f"larger than {settings.KNOWLEDGE_IMPORT_MAX_BYTES} bytes")
                )
                continue
            members, problems = _parse_zip(name, data)
            parsed.extend(members)
            errors.extend(problems)
        else:
            one, problems = _parse_one(name, data)
            parsed.append(one)
            errors.extend(problems)
    errors.extend(_duplicates(parsed))
    return ParsedUpload(files=parsed, errors=errors)


def _duplicates(files: Sequence[ParsedFile]) -> list[FileError]:
    where: dict[tuple[str, str], list[str]] = {}
    for parsed in files:
        for article in parsed.articles:
            where.setdefault(("article", article.external_id), []).append(parsed.name)
        for macro in parsed.macros:
            where.setdefault(("macro", macro.external_id), []).append(parsed.name)
    errors: list[FileError] = []
    for (kind, external_id), names in where.items():
        if len(names) > 1:
            others = ", ".join(sorted(set(names)))
            errors.append(
                FileError(
                    names[0],
                    f"{kind} external_id {external_id!r} appears {len(names)} times ({others})",
                )
            )
    return errors
