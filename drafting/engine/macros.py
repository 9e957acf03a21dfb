"""Macros as tier 0: a team's canned reply offered as the draft when it confidently matches the
customer's turn, at no model cost (drafting.services records it like a cache hit: an attempt
with `macro` set, tier 0, no endpoint).

A match, in order:
1. by intent: the message already has an intent verdict (a person's label, or the classifier's
   at MACRO_MIN_INTENT_CONFIDENCE or more) and an active macro is attached to that intent;
2. by similarity: the turn's embedding (the draft's own QueryVector: no second embedding)
   against the macro's (title and body) and against the turns agents *used* it for
   (MacroExample, used=True); the macro's pull is the best of these, and it is offered when
   the pull reaches MACRO_MIN_SIMILARITY and no turn agents *rejected* it for
   (used=False) is at least as close. Strict by default (0.80 with MiniLM): "Do you ship to
   Mexico?" is 0.71 from "Do you ship to Canada?", paraphrases 0.80-0.89; a wrong canned
   answer costs an agent more than no offer. A question against a macro's body rarely reaches
   it (0.6-0.7), so at first intents do most matching, and agents' use teaches the rest.

Placeholders (`fill`): `{customer_name}` becomes the customer's name when the conversation's
customer reference looks like one, else the greeting falls back to "Hi there" / "Hello" (and a
name elsewhere is left out). `{agent_name}` is kept literally in the draft: the draft is made
before any agent is assigned, and the console fills it with the name of the agent it shows the
draft to (the same convention for the holding reply). Other placeholders stay as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from drafting.engine.vectors import QueryVector, nearest
from drafting.models import Macro, MacroExample

CUSTOMER_NAME = "{customer_name}"
AGENT_NAME = "{agent_name}"

# How many rows the similarity look-ups consider: a few macros, and enough examples that a
# rejected turn near a used one is seen.
MACRO_CANDIDATES = 3
EXAMPLE_CANDIDATES = 12

_NAME = re.compile(r"^[^\W\d_]+(?:[ '’.-]+[^\W\d_]+){0,2}$")
_GREETED = re.compile(r"\b(hi|hello|hey|dear)(\s*,?\s*)\{customer_name\}", re.IGNORECASE)
_ANYWHERE = re.compile(r"[ \t]*,?[ \t]*\{customer_name\}")


def customer_name(reference: str) -> str:
    """The customer's name when their reference looks like one ("Dana", "Dana Scully"), else
    "" (an address, an id, an e-mail)."""
    reference = reference.strip()
    return reference if len(reference) <= 60 and _NAME.match(reference) else ""


def fill(template: str, *, name: str) -> str:
    """The template with `{customer_name}` filled (see the module docstring); `{agent_name}`
    and any other placeholder left for the console."""
    if name:
        return template.replace(CUSTOMER_NAME, name)

    def greeting(match: re.Match[str]) -> str:
        word = match.group(1)
        return "Hello" if word.casefold() == "dear" else f"{word} there"

    return _ANYWHERE.sub("", _GREETED.sub(greeting, template))


@dataclass(frozen=True)
class MacroMatch:
    macro: Macro
    by: str  # "intent" or "similarity"
    similarity: float | None  # the pull (similarity matches only)


def macro_by_intent(*, team_id: int, intent_id: int) -> MacroMatch | None:
    macro = (
        Macro.objects.filter(team_id=team_id, active=True, intent_id=intent_id)
        .only("id", "title", "body")
        .order_by("id")
        .first()
    )
    return MacroMatch(macro=macro, by="intent", similarity=None) if macro else None


def macro_by_similarity(*, team_id: int, query: QueryVector) -> MacroMatch | None:
    """The best-pulling active macro at MACRO_MIN_SIMILARITY or more, unless a turn agents
    rejected it for is at least as close; None without an embedding. Two queries."""
    threshold = settings.MACRO_MIN_SIMILARITY
    if threshold > 1 or not (embedded := query.get()):
        return None
    model, vector = embedded
    active = Macro.objects.filter(team_id=team_id, active=True)
    pull: dict[int, float] = {}
    macros: dict[int, Macro] = {}
    for macro, similarity in nearest(
        active.only("id", "title", "body"),
        model=model,
        vector=vector,
        k=MACRO_CANDIDATES,
        min_similarity=threshold,
    ):
        macros[macro.pk] = macro
        pull[macro.pk] = similarity
    push: dict[int, float] = {}
    for example, similarity in nearest(
        MacroExample.objects.filter(macro__team_id=team_id, macro__active=True)
        .select_related("macro")
        .only("id", "used", "macro_id", "macro__id", "macro__title", "macro__body"),
        model=model,
        vector=vector,
        k=EXAMPLE_CANDIDATES,
        min_similarity=0.0,
    ):
        side = pull if example.used else push
        if example.used and similarity >= threshold:
            macros.setdefault(example.macro_id, example.macro)
        side[example.macro_id] = max(side.get(example.macro_id, -1.0), similarity)
    offered = [
        (similarity, macro_id)
        for macro_id, similarity in pull.items()
        if similarity >= threshold and push.get(macro_id, -1.0) < similarity
    ]
    if not offered:
        return None
    similarity, macro_id = max(offered)
    return MacroMatch(macro=macros[macro_id], by="similarity", similarity=similarity)


def macro_match(*, team_id: int, query: QueryVector, intent_id: int | None) -> MacroMatch | None:
    """A confident macro for the turn: by its intent verdict (`intent_id`: the caller applied
    the confidence floor) first, else by similarity."""
    if intent_id is not None and (found := macro_by_intent(team_id=team_id, intent_id=intent_id)):
        return found
    return macro_by_similarity(team_id=team_id, query=query)
