"""PII redaction before a conversation leaves for a non-local tier, and restoring it after.

`redact` swaps personal data for typed placeholders (`[EMAIL_1]`, `[PHONE_2]`, `[CARD_1]`,
`[IBAN_1]`) and returns the mapping; `restore` puts the originals back into the paid model's
draft where that is safe. The same value (ignoring spacing, and case for emails) always gets the
same placeholder, also across the messages of one conversation (`start`, `redact_messages`).

Rules, applied in this order so that a looser pattern cannot take another kind's digits (emails
first because an address may hold digits; IBAN and card before phone):

- EMAIL: local@domain.tld.
- IBAN: country code, 2 check digits, 11–30 letters/digits, compact or in groups of four, only
  when the ISO 13616 mod-97 check passes.
- CARD: 13–19 digits, compact or grouped by spaces or dashes (4-4-4-4…, Amex 4-6-5), only when
  the Luhn checksum passes: most order and tracking numbers fail it.
- PHONE: 7–15 digits in a phone shape: "+" country code, "(area code)", a national trunk "0",
  or dashed/dotted 3-3-4 and 3-4 groups. A bare run of digits counts only with a leading "0" and
  ≥ 10 digits, so order numbers, prices, dates and times are left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

EMAIL, PHONE, CARD, IBAN = "EMAIL", "PHONE", "CARD", "IBAN"
# The customer's own contact details echoed back are fine; a draft must never repeat payment data.
RESTORABLE = frozenset({EMAIL, PHONE})

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}")
# ASCII: int(c, 36) in the mod-97 check must not meet a Unicode letter that IGNORECASE lets in.
_IBAN = re.compile(
    r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b",
    re.IGNORECASE | re.ASCII,
)
_CARD = re.compile(
    r"(?<![\d+])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{5})"
    r"(?!\d)"
)
_PHONE = re.compile(
    # Not the tail of a word, an order number, a price or a date, nor the later groups of a
    # longer number (an IBAN that failed its check is not a phone number either).
    r"(?<![\w#$€£¥.,/+-])(?<!\d )"
    r"(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){1,5}"  # +44 20 7946 0958
    r"|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"  # (555) 123-4567
    r"|0\d{1,4}(?:[ ./-]?\d{2,8}){1,4}"  # 0171 2345678, 030/1234567, 01 23 45 67 89
    r"|\d{3}([.-])\d{3}\1\d{4}|\d{3} \d{3} \d{4}|\d{3}-\d{4})"  # 555-123-4567, 555-0199
    r"(?![\w-]|[.,:/]\d)"  # nor the head of a longer number
)
# A trunk-"0" shape also fits "01.02.2024"; a date is not a phone number.
_DATE = re.compile(r"(?:\d{4}([./-])\d{1,2}\1\d{1,2}|\d{1,2}([./-])\d{1,2}\2\d{2,4})(?!\d)")
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN)_(\d+)\]")


@dataclass(frozen=True)
class Redaction:
    """Redacted text and the whole mapping so far (placeholder → original), `start` included."""

    text: str
    placeholders: dict[str, str]

    @property
    def counts(self) -> dict[str, int]:
        """Distinct values per kind, for logs and records (the values themselves stay here)."""
        return dict(Counter(_kind(p) for p in self.placeholders if _kind(p)))


def _kind(placeholder: str) -> str:
    match = _PLACEHOLDER.fullmatch(placeholder)
    return match.group(1) if match else ""


def _identity(kind: str, value: str) -> str:
    """What makes two spellings the same value: "4242 4242…" is "4242-4242…" is "42424242…"."""
    return value.lower() if kind == EMAIL else re.sub(r"[^0-9A-Za-z+]", "", value).upper()


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdecimal()]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return 13 <= len(digits) <= 19 and total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    # ISO 13616: move the first four characters to the end, letters become 10–35, mod 97 is 1.
    number = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(number) % 97 == 1


def _phone_ok(candidate: str) -> bool:
    digits = sum(c.isdecimal() for c in candidate)
    if candidate.isdecimal() and digits < 10:
        return False
    return 7 <= digits <= 15 and not _DATE.match(candidate)


def _longest_valid(valid: Callable[[str], bool]) -> Callable[[str], str | None]:
    """Check a match, then shorter cuts of it at a separator: a CVV after a card number, an
    uppercase word after an IBAN, a quantity after a phone number look like one more group."""

    def check(candidate: str) -> str | None:
        while not valid(candidate):
            cut = max(candidate.rfind(" "), candidate.rfind("-"))
            if cut <= 0:
                return None
            candidate = candidate[:cut]
        return candidate

    return check


_RULES: list[tuple[str, re.Pattern[str], Callable[[str], str | None]]] = [
    (EMAIL, _EMAIL, lambda found: found),
    (IBAN, _IBAN, _longest_valid(_iban_ok)),
    (CARD, _CARD, _longest_valid(_luhn_ok)),
    (PHONE, _PHONE, _longest_valid(_phone_ok)),
]


def _substitute(
    text: str,
    pattern: re.Pattern[str],
    check: Callable[[str], str | None],
    placeholder: Callable[[str], str],
) -> str:
    """`pattern.sub`, except that a rejected match is searched again from its second character:
    a real card may begin inside a longer run of numbers that failed as a whole."""
    parts: list[str] = []
    pos = 0
    while match := pattern.search(text, pos):
        found = check(match.group())
        if found is None:
            parts.append(text[pos : match.start() + 1])
            pos = match.start() + 1
            continue
        # A shortened find leaves the tail it shed to be scanned again.
        parts += [text[pos : match.start()], placeholder(found)]
        pos = match.start() + len(found)
    return "".join([*parts, text[pos:]])


def redact(text: str, *, start: dict[str, str] | None = None) -> Redaction:
    """Replace emails, IBANs, cards and phone numbers in `text` by typed placeholders.

    `start` is the mapping from earlier texts of the same conversation: values seen there keep
    their placeholder and new ones are numbered after them. It is not modified.
    """
    placeholders = dict(start or {})
    known = {(_kind(p), _identity(_kind(p), v)): p for p, v in placeholders.items() if _kind(p)}

    def placeholder_for(kind: str, value: str) -> str:
        key = (kind, _identity(kind, value))
        if key not in known:
            number = 1 + sum(1 for p in placeholders if _kind(p) == kind)
            while f"[{kind}_{number}]" in placeholders:
                number += 1
            known[key] = f"[{kind}_{number}]"
            placeholders[known[key]] = value
        return known[key]

    for kind, pattern, check in _RULES:
        text = _substitute(text, pattern, check, partial(placeholder_for, kind))
    return Redaction(text=text, placeholders=placeholders)


def redact_messages(
    messages: list[dict[str, str]],
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Redact the `content` of every chat message (OpenAI role/content) with one shared mapping,
    so a customer's address is `[EMAIL_1]` in every turn that mentions it."""
    placeholders: dict[str, str] = {}
    redacted: list[dict[str, str]] = []
    for message in messages:
        if "content" not in message:
            redacted.append(dict(message))
            continue
        result = redact(message["content"], start=placeholders)
        placeholders = result.placeholders
        redacted.append({**message, "content": result.text})
    return redacted, placeholders


def _mask(kind: str, original: str) -> str:
    compact = re.sub(r"[^0-9A-Za-z]", "", original).upper()
    if kind == CARD:
        return f"•••• {compact[-4:]}"
    return f"{compact[:4]} •••• {compact[-4:]}"


def restore(text: str, placeholders: dict[str, str]) -> str:
    """Put originals back into a draft: emails and phones in full, cards and IBANs masked to
    their last four ("•••• 4242", "DE89 •••• 3000"). Placeholders the model invented or mangled
    are not in the mapping and stay as written."""

    def put_back(match: re.Match[str]) -> str:
        original = placeholders.get(match.group())
        if original is None:
            return match.group()
        kind = match.group(1)
        return original if kind in RESTORABLE else _mask(kind, original)

    return _PLACEHOLDER.sub(put_back, text)


def scrub(text: str) -> str:
    """Personal data replaced for good by unnumbered placeholders (`[EMAIL]`, `[CARD]` …), for
    text kept to show other conversations (few-shot examples). `restore` never matches them, so
    one customer's address can never be put back into another customer's draft."""
    redacted = redact(text)
    return _PLACEHOLDER.sub(lambda match: f"[{match.group(1)}]", redacted.text)
