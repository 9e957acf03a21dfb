"""Training sets from agent actions: the replies agents sent, as chat transcripts and preference
pairs for fine-tuning the local model (drafting.learning.distill trains on them).

An example is one reply an agent sent from a draft: used as is or edited (AgentAction kinds
`use` and `edit`; the target is `AgentAction.final_text`, the text the customer received). Not
examples: ignored drafts (the agent rejected the draft and wrote their own reply, often from
what the prompt did not hold), and replies written with no draft shown (`none`: held-out
conversations, withheld or failed drafts): no retrieval ran for a held-out message, so its
prompt cannot be the one the local tier is sent for a grounded team, and training on replies
full of facts under prompts without passages teaches the adapter to state facts it was not
given — the invention grounding exists to prevent.

The prompt of an example is the one the local tier is sent when drafting, so that the adapter
trains on what it will see: the policy's system prompt with the draft's knowledge passages
(DraftPassage rows, numbered and rendered as the cascade renders them under KNOWLEDGE_HEADER),
then the thread up to the customer's message (the newest DRAFT_HISTORY_MESSAGES turns, in
arrival order; drafting.engine.prompting.thread_messages, the worker's own). Few-shot examples
are left out: they are not stored with the draft, and recomputing them at export time would
show the model replies sent after the one it learns. Nor is the prompt trimmed to a tier's
token budget (which depends on the endpoint serving it): the trainer cuts what does not fit.

Every text (system prompt, customer turns, agent replies, passages, drafts) is scrubbed for good
as few-shot examples are (drafting.engine.pii.scrub_details: emails, phones, cards, IBANs,
names, customer numbers, addresses become [EMAIL], [NAME], [NUMBER]…), with the whole
conversation's customer turns and reference as context, and the names of the agents who wrote
in it replaced by [NAME] too. The same prompt with the same reply is one example (the first
sent). Train and validation are split by conversation (a seeded hash of its id), never by
message, so no conversation teaches the model the answers it is validated on. The rows decide
the bytes: the same rows and filters give the same files and the same `data_sha256`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from csbot.models import Message
from drafting.engine.grounding import KNOWLEDGE_HEADER, StoredPassage, passage_line
from drafting.engine.macros import AGENT_NAME
from drafting.engine.pii import scrub_details
from drafting.engine.prompting import knowledge_block, thread_messages, with_knowledge
from drafting.models import AgentAction, DraftPassage

Transcript = list[dict[str, str]]
Progress = Callable[[str], None]

# The files of an export, in the order their hashes make `data_sha256`.
TRAIN, VALIDATION = "train.jsonl", "validation.jsonl"
PAIRS_TRAIN, PAIRS_VALIDATION = "preferences_train.jsonl", "preferences_validation.jsonl"
FILES = (TRAIN, VALIDATION, PAIRS_TRAIN, PAIRS_VALIDATION)
MANIFEST = "manifest.json"
FORMAT = "csbot-distill-export/1"


class DistillDataError(ValueError):
    """The export cannot be made as asked (bad filters, a damaged export folder)."""


class TooFewConversations(DistillDataError):
    """Fewer conversations qualify than the filters' minimum."""

    def __init__(self, found: int, minimum: int):
        super().__init__(
            f"only {found} conversation{' qualifies' if found == 1 else 's qualify'} (with a "
            f"sent reply); at least {minimum} are needed"
        )
        self.found = found
        self.minimum = minimum


@dataclass(frozen=True)
class ExportFilters:
    """Which sent replies an export holds. `since`/`until` are inclusive days of the action's
    time (in the installation's time zone); `intent` is an intent's name, matched against the
    message's confident verdict (MACRO_MIN_INTENT_CONFIDENCE, the floor routing and macros
    use); `policy_id` is the draft's policy."""

    team_id: int
    since: date | None = None
    until: date | None = None
    intent: str | None = None
    policy_id: int | None = None
    min_conversations: int = 20
    validation_share: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise DistillDataError(f"since ({self.since}) is after until ({self.until})")
        if not 0 <= self.validation_share < 1:
            raise DistillDataError("the validation share must be at least 0 and under 1")
        if self.min_conversations < 1:
            raise DistillDataError("the minimum of conversations must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (DistillRun.filters, the manifest)."""
        return {
            "team_id": self.team_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "intent": self.intent,
            "policy_id": self.policy_id,
            "min_conversations": self.min_conversations,
            "validation_share": self.validation_share,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExportFilters:
        return cls(
            team_id=int(values["team_id"]),
            since=date.fromisoformat(values["since"]) if values.get("since") else None,
            until=date.fromisoformat(values["until"]) if values.get("until") else None,
            intent=values.get("intent"),
            policy_id=values.get("policy_id"),
            min_conversations=int(values.get("min_conversations", 20)),
            validation_share=float(values.get("validation_share", 0.2)),
            seed=int(values.get("seed", 0)),
        )


def _line(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False) + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class DistillExport:
    """A training set: transcripts (the last message is the agent's reply) and preference
    pairs (edited drafts: the agent's final text preferred to the draft), each split into
    train and validation by conversation. `n_conversations` is (train, validation)."""

    train: list[Transcript]
    validation: list[Transcript]
    pairs_train: list[dict[str, Any]]
    pairs_validation: list[dict[str, Any]]
    n_conversations: tuple[int, int]
    filters: ExportFilters
    duplicates: int = 0  # examples dropped as repeats of an earlier one

    def counts(self) -> dict[str, int]:
        return {
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "n_pairs_train": len(self.pairs_train),
            "n_pairs_validation": len(self.pairs_validation),
            "n_conversations": sum(self.n_conversations),
            "n_conversations_train": self.n_conversations[0],
            "n_conversations_validation": self.n_conversations[1],
            "n_duplicates": self.duplicates,
        }

    def files(self) -> dict[str, bytes]:
        """The four JSONL files' bytes: one JSON object a line, keys sorted, UTF-8 as is.
        Transcripts are `{"messages": [...]}` (the chat format OpenAI-compatible fine-tuning
        accepts), pairs `{"input": {"messages"}, "preferred_output", "non_preferred_output"}`
        (the preference format)."""
        return {
            TRAIN: "".join(_line({"messages": t}) for t in self.train).encode(),
            VALIDATION: "".join(_line({"messages": t}) for t in self.validation).encode(),
            PAIRS_TRAIN: "".join(_line(p) for p in self.pairs_train).encode(),
            PAIRS_VALIDATION: "".join(_line(p) for p in self.pairs_validation).encode(),
        }

    def data_sha256(self) -> str:
        """The data snapshot's hash (DistillRun.data_sha256): over the files' hashes, in FILES
        order."""
        return _data_sha256({name: _sha256(data) for name, data in self.files().items()})


def _data_sha256(hashes: dict[str, str]) -> str:
    return _sha256("".join(f"{name} {hashes[name]}\n" for name in FILES).encode())


# --- Reading the rows ---------------------------------------------------------------------------


@dataclass
class _Conversation:
    """What scrubbing one conversation needs: its customer's turns and reference, and the
    names of the agents who wrote in it."""

    customer_turns: list[str] = field(default_factory=list)
    reference: str = ""
    agent_names: set[str] = field(default_factory=set)
    thread: list[tuple[int, str, str]] = field(default_factory=list)  # (id, direction, text)
    scrubbed: dict[str, str] = field(default_factory=dict)

    def scrub(self, text: str) -> str:
        if text not in self.scrubbed:
            clean = scrub_details(text, customer=self.customer_turns, reference=self.reference)
            for name in sorted(self.agent_names, key=len, reverse=True):
                clean = re.sub(rf"\b{re.escape(name)}\b", "[NAME]", clean)
            self.scrubbed[text] = clean
        return self.scrubbed[text]


def _name_words(*names: str) -> set[str]:
    """Words of an agent's names worth replacing (capitalised as written, two letters or more)."""
    return {word for name in names for word in re.findall(r"[^\W\d_]{2,}", name)}


@dataclass(frozen=True)
class _Sent:
    """What an example needs of one agent action (its field names are the ORM's paths)."""

    id: int
    kind: str
    final_text: str
    draft_id: int
    draft__text: str
    draft__policy__system_prompt: str
    inbound_message_id: int
    inbound_message__conversation_id: int
    inbound_message__conversation__customer_ref: str
    agent__first_name: str
    agent__last_name: str
    agent__username: str

    @property
    def conversation_id(self) -> int:
        return self.inbound_message__conversation_id

    @property
    def signer(self) -> str:
        """How the agent signs ({agent_name}: drafting.selectors.agent_display_name)."""
        full = f"{self.agent__first_name} {self.agent__last_name}".strip()
        return full or self.agent__username


def _actions(filters: ExportFilters) -> list[_Sent]:
    """The sent replies the filters select: used or edited drafts of the team, first sent
    first (the one kept when two are the same example)."""
    actions = AgentAction.objects.filter(
        kind__in=[AgentAction.Kind.USE, AgentAction.Kind.EDIT],
        draft__isnull=False,
        draft__policy__team_id=filters.team_id,
        inbound_message__conversation__team_id=filters.team_id,
    )
    if filters.since is not None:
        actions = actions.filter(acted_at__date__gte=filters.since)
    if filters.until is not None:
        actions = actions.filter(acted_at__date__lte=filters.until)
    if filters.policy_id is not None:
        actions = actions.filter(draft__policy_id=filters.policy_id)
    if filters.intent is not None:
        actions = actions.filter(
            inbound_message__intent_verdict__intent__name=filters.intent,
            inbound_message__intent_verdict__intent__team_id=filters.team_id,
            inbound_message__intent_verdict__confidence__gte=Decimal(
                str(settings.MACRO_MIN_INTENT_CONFIDENCE)
            ),
        )
    fields = [f.name for f in dataclasses.fields(_Sent)]
    rows = actions.order_by("acted_at", "id").values_list(*fields)
    return [_Sent(*row) for row in rows]


def _conversations(actions: Sequence[_Sent]) -> dict[int, _Conversation]:
    """The conversations of `actions`, every message in arrival order (one query)."""
    conversations: dict[int, _Conversation] = defaultdict(_Conversation)
    for action in actions:
        conversation = conversations[action.conversation_id]
        conversation.reference = action.inbound_message__conversation__customer_ref or ""
        full = f"{action.agent__first_name} {action.agent__last_name}"
        # Their name's words; a user name (how they sign without one) only whole.
        conversation.agent_names |= _name_words(full) or {action.agent__username}
    rows = (
        Message.objects.filter(conversation_id__in=list(conversations))
        .order_by("conversation_id", "id")
        .values_list(
            "conversation_id",
            "id",
            "direction",
            "text",
            "author_user__first_name",
            "author_user__last_name",
        )
    )
    for conversation_id, message_id, direction, text, first, last in rows:
        conversation = conversations[conversation_id]
        conversation.thread.append((message_id, direction, text))
        if direction == Message.Direction.INBOUND:
            conversation.customer_turns.append(text)
        else:
            conversation.agent_names |= _name_words(first or "", last or "")
    return conversations


def _passages(draft_ids: Iterable[int]) -> dict[int, list[str]]:
    """draft id → its passages as the model saw them (`[n] Title — heading: text`), by number."""
    lines: dict[int, list[str]] = defaultdict(list)
    rows = (
        DraftPassage.objects.filter(draft_id__in=list(draft_ids))
        .order_by("draft_id", "number")
        .values_list(
            "draft_id",
            "number",
            "text",
            "score",
            "vector_similarity",
            "article__title",
            "chunk__heading",
        )
    )
    for draft_id, number, text, score, similarity, title, heading in rows:
        stored = StoredPassage(title or "", heading or "", text, score, similarity)
        lines[draft_id].append(passage_line(number, stored))
    return lines


def _prompt(
    conversation: _Conversation, *, message_id: int, system_prompt: str, passages: list[str]
) -> Transcript:
    """The local tier's prompt for the message, scrubbed: the system prompt with the passages'
    block (as the cascade appends it), then the thread up to the message (the worker's
    `_thread`: every message up to it, the newest DRAFT_HISTORY_MESSAGES)."""
    scrub = conversation.scrub
    thread = [(d, scrub(text)) for i, d, text in conversation.thread if i <= message_id]
    messages = thread_messages(
        system_prompt=scrub(system_prompt),
        thread=thread,
        history=settings.DRAFT_HISTORY_MESSAGES,
    )
    block = knowledge_block([scrub(line) for line in passages], KNOWLEDGE_HEADER)
    return with_knowledge(messages, block)


def _validation_side(conversation_id: int, seed: int) -> float:
    """A conversation's place in [0, 1): validation when under the share."""
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).hexdigest()
    return int(digest, 16) / 16 ** len(digest)


def _split(conversation_ids: set[int], filters: ExportFilters) -> set[int]:
    """The validation conversations: those whose seeded hash falls under the share. With a
    share above 0 and two conversations or more, each side gets at least one (the lowest hash
    goes to validation, the highest stays in train): a tiny export still validates."""
    place = {c: _validation_side(c, filters.seed) for c in conversation_ids}
    chosen = {c for c, p in place.items() if p < filters.validation_share}
    if filters.validation_share > 0 and len(place) >= 2:
        ordered = sorted(place, key=lambda c: (place[c], c))
        if not chosen:
            chosen = {ordered[0]}
        if chosen == set(place):
            chosen.discard(ordered[-1])
    return chosen


def distill_examples(filters: ExportFilters, *, progress: Progress | None = None) -> DistillExport:
    """The training set the filters select.

    Steps: read the team's used and edited drafts' actions (first sent first), their
    conversations' messages and the drafts' passages (three queries); build each example's
    prompt as the local tier is sent it and its reply, every text scrubbed; drop an example
    whose prompt and reply repeat an earlier one's; an edited draft (still different from the
    reply once both are scrubbed) also gives a preference pair; raise TooFewConversations when
    fewer than `min_conversations` conversations remain; split by conversation; order by
    conversation id, then message (arrival order: ids), so the same rows give the same bytes.
    """
    say = progress or (lambda _message: None)
    actions = _actions(filters)
    say(f"{len(actions)} sent replies (used or edited drafts) match the filters")
    conversations = _conversations(actions)
    passages = _passages(a.draft_id for a in actions)
    seen: set[str] = set()
    kept: list[tuple[tuple[int, int, int], Transcript, dict[str, Any] | None]] = []
    duplicates = 0
    for action in actions:
        conversation = conversations[action.conversation_id]
        prompt = _prompt(
            conversation,
            message_id=action.inbound_message_id,
            system_prompt=action.draft__policy__system_prompt,
            passages=passages.get(action.draft_id, []),
        )
        reply = conversation.scrub(action.final_text)
        key = _sha256(_line([prompt, reply]).encode())
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        pair = None
        if action.kind == AgentAction.Kind.EDIT:
            # The draft as the agent had it: a macro's {agent_name} signed (selectors).
            drafted = conversation.scrub(action.draft__text.replace(AGENT_NAME, action.signer))
            if drafted != reply:
                pair = {
                    "input": {"messages": prompt},
                    "preferred_output": [{"role": "assistant", "content": reply}],
                    "non_preferred_output": [{"role": "assistant", "content": drafted}],
                }
        order = (action.conversation_id, action.inbound_message_id, action.id)
        kept.append((order, [*prompt, {"role": "assistant", "content": reply}], pair))
    found = len({order[0] for order, _, _ in kept})
    say(f"{len(kept)} examples from {found} conversations ({duplicates} duplicates dropped)")
    if found < filters.min_conversations:
        raise TooFewConversations(found, filters.min_conversations)
    kept.sort(key=lambda item: item[0])
    held = _split({order[0] for order, _, _ in kept}, filters)
    export = DistillExport(
        train=[t for order, t, _ in kept if order[0] not in held],
        validation=[t for order, t, _ in kept if order[0] in held],
        pairs_train=[p for order, _, p in kept if p is not None and order[0] not in held],
        pairs_validation=[p for order, _, p in kept if p is not None and order[0] in held],
        n_conversations=(found - len(held), len(held)),
        filters=filters,
        duplicates=duplicates,
    )
    return export


# --- Files --------------------------------------------------------------------------------------


def write_export(export: DistillExport, out_dir: Path) -> dict[str, Any]:
    """Write the four JSONL files and manifest.json (filters, counts, each file's sha256 and
    `data_sha256`) into `out_dir` (made if missing; files of the same names replaced); return
    the manifest. No time stamp: the same export is the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = export.files()
    hashes = {name: _sha256(data) for name, data in files.items()}
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    manifest = {
        "format": FORMAT,
        "filters": export.filters.as_dict(),
        "counts": export.counts(),
        "files": hashes,
        "data_sha256": _data_sha256(hashes),
    }
    (out_dir / MANIFEST).write_text(
        json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return manifest


def _jsonl(data: bytes, name: str) -> list[Any]:
    try:
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillDataError(f"{name} is not JSON lines: {exc}") from exc


def read_export(directory: Path) -> DistillExport:
    """The export written in `directory`, checked against its manifest (each file's sha256):
    what the training command trains on is what the manifest's `data_sha256` names."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DistillDataError(f"no {MANIFEST} in {directory}: not an export folder") from exc
    except json.JSONDecodeError as exc:
        raise DistillDataError(f"{MANIFEST} in {directory} is not JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise DistillDataError(f"{directory} holds an export of another format")
    data: dict[str, bytes] = {}
    for name in FILES:
        try:
            data[name] = (directory / name).read_bytes()
        except FileNotFoundError as exc:
            raise DistillDataError(f"{name} is missing from {directory}") from exc
        if _sha256(data[name]) != manifest["files"].get(name):
            raise DistillDataError(f"{name} changed since it was exported (sha256 differs)")
    counts = manifest.get("counts", {})
    return DistillExport(
        train=[row["messages"] for row in _jsonl(data[TRAIN], TRAIN)],
        validation=[row["messages"] for row in _jsonl(data[VALIDATION], VALIDATION)],
        pairs_train=_jsonl(data[PAIRS_TRAIN], PAIRS_TRAIN),
        pairs_validation=_jsonl(data[PAIRS_VALIDATION], PAIRS_VALIDATION),
        n_conversations=(
            int(counts.get("n_conversations_train", 0)),
            int(counts.get("n_conversations_validation", 0)),
        ),
        filters=ExportFilters.from_dict(manifest["filters"]),
        duplicates=int(counts.get("n_duplicates", 0)),
    )
