"""Personal data: redaction before a conversation leaves for a non-local tier, restoring it
after, masking payment data in every draft, and telling customer-specific text apart.

`redact` swaps personal data for typed placeholders (`[EMAIL_1]`, `[PHONE_2]`, `[CARD_1]`,
`[IBAN_1]`) and returns the mapping; `restore` puts the originals back into the paid model's
draft where that is safe. The same value (ignoring separators, and case for emails and IBANs)
always gets the same placeholder, also across the messages of one conversation (`start`,
`redact_messages`). `scrub` replaces for good, for text kept beyond one conversation.

People write numbers however they like, so every rule below reads digit *runs*: digit groups
joined by separators of any kind — spaces (several, irregular, no-break, thin, narrow and
figure spaces), dots, slashes, dashes of any Unicode width, zero-width characters, up to three
in a row — plus a leading "+" and an area code in parentheses. Any decimal digit counts
(fullwidth too). A separator-joined run is cut into candidates at its group boundaries.

Rules, applied in this order so that a looser rule cannot take another kind's digits (emails
first because an address may hold digits; IBAN and card before phone):

- EMAIL: local@domain.tld.
- IBAN: a country code, 2 check digits, then letters and digits with any separators (or none),
  any case. The country's registered IBAN length must be met exactly and the ISO 13616 mod-97
  check must pass; a country code outside the registry counts only in capitals, 15–34 long.
- CARD: 13–19 digits, any grouping, starting with 1–9 (no card number starts with 0, and none
  is written after "+"), only when the Luhn checksum passes: most order and tracking numbers
  fail it. Card-like groupings (compact, fours, 4-6-4, 4-6-5) are taken first, so that a phone
  number just before a card cannot lend its digits to a Luhn-valid mix of both.
- PHONE, where a number is a phone number by its shape:
  * "+" and 7–15 digits (an optional "(0)" trunk too): international;
  * "00", a country code (not 0) and 7–15 digits: international without the plus;
  * a national trunk "0" (then not 0) and 7–12 digits with separators, 10–12 without, unless
    the run begins with a date (01.02.2024, or exactly a date such as 03/15/24);
  * North American: 3-3-4 groups, 1-3-3-4, "(area) …", 3-4 joined by a dash (555-0199),
    or 10 digits without separators (11 after a "1") with a valid area code and exchange
    (first digits 2–9): 4155552671;
  * any 7–15 digits (not a date) after a phone word (call, phone, mobile, number, …).
  A run is not a phone number when it is glued to a word or a number ("A1042", "1,299"),
  follows "#" or a currency, is followed by "%" or a currency, or when an identifier word
  (order, reference, invoice, tracking, …) precedes it — "+" numbers excepted.
  So order and reference numbers, prices, dates and times are left alone; the price of the
  NANP rule is that a bare 10-digit number without context that could be dialled in North
  America is taken for one.

`customer_details` finds what personal-data rules cannot: names, identifying numbers and
addresses (see its docstring). The completion cache refuses a reply that holds any
(drafting.engine.cache) and few-shot examples replace them (`scrub_details`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

EMAIL, PHONE, CARD, IBAN = "EMAIL", "PHONE", "CARD", "IBAN"
NAME, NUMBER, ADDRESS = "NAME", "NUMBER", "ADDRESS"
# The customer's own contact details echoed back are fine; a draft must never repeat payment data.
RESTORABLE = frozenset({EMAIL, PHONE})

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}")
# One separator character between digit groups: horizontal white space of any kind (no line
# break), dot, slash, hyphen, the Unicode dashes and minus, and zero-width characters.
_SEP = r"(?:[^\S\r\n]|[./\u2010-\u2015\u2212\u200b-\u200d\u2060\ufeff-])"
_SEP_CHAR = re.compile(_SEP)
_GROUP = r"(?:\(\d{1,5}\)|\d+)"
_RUN = re.compile(rf"(?:\+{_SEP}{{0,2}})?{_GROUP}(?:(?:{_SEP}{{1,3}}|(?=\()|(?<=\))){_GROUP})*")
_GROUPS = re.compile(r"\(\d{1,5}\)|\d+")
_IBAN_HEAD = re.compile(rf"(?<![A-Za-z0-9])([A-Za-z]{{2}}){_SEP}{{0,3}}([0-9]{{2}})")
# ISO 13616 registry: the full IBAN length per country.
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FK", "FO", "GL", "NL", "SD"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "OM", "SO", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["LY", "PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HN", "HU", "LB", "NI", "PL"], 28),
    **dict.fromkeys(["SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU", "YE"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
    **dict.fromkeys(["RU"], 33),
}
_PHONE_WORDS = frozenset(
    [
        "call",
        "calling",
        "phone",
        "phoned",
        "tel",
        "telephone",
        "mobile",
        "mob",
        "cell",
        "cellphone",
        "fax",
        "whatsapp",
        "sms",
        "text",
        "ring",
        "dial",
        "reach",
        "contact",
        "landline",
        "number",
        "no",
        "nr",
        "telefon",
        "handy",
    ]
)
_ID_WORDS = frozenset(
    [
        "order",
        "orders",
        "ref",
        "reference",
        "invoice",
        "tracking",
        "track",
        "ticket",
        "case",
        "booking",
        "confirmation",
        "parcel",
        "shipment",
        "package",
        "sku",
        "item",
        "article",
        "account",
        "customer",
        "id",
        "serial",
        "receipt",
        "transaction",
        "po",
        "rma",
        "claim",
        "membership",
        "voucher",
        "coupon",
        "code",
        "postcode",
        "zip",
        "iban",
        "card",
        "bic",
        "swift",
        "amount",
        "total",
        "price",
        "qty",
        "quantity",
    ]
)
_CURRENCY_BEFORE = re.compile(r"(?:[$€£¥]|\b(?:EUR|USD|GBP|CHF|CAD|AUD|JPY))\s?$", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(r"\s?(?:[$€£¥%]|(?:EUR|USD|GBP|CHF|CAD|AUD|JPY)\b)", re.IGNORECASE)
_WORDS = re.compile(r"[^\W\d_]+|#")
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN)_(\d+)\]")
_ANY_PLACEHOLDER = re.compile(r"\[[A-Z]+(?:_\d+)?\]")


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


def _ascii_digits(text: str) -> str:
    """The decimal digits of `text` as ASCII digits ("４２" is "42")."""
    return "".join(str(int(c)) for c in text if c.isdecimal())


def _identity(kind: str, value: str) -> str:
    """What makes two spellings the same value: "4242 4242…" is "4242.4242…" is "42424242…"."""
    if kind == EMAIL:
        return value.lower()
    if kind == PHONE:
        return ("+" if value.lstrip().startswith("+") else "") + _ascii_digits(value)
    if kind == CARD:
        return _ascii_digits(value)
    return "".join(c for c in value if c.isascii() and c.isalnum()).upper()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(int(c) for c in reversed(digits)):
        doubled = digit * 2 if position % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return 13 <= len(digits) <= 19 and total % 10 == 0


# Countries whose registered BBAN is digits only (ISO 13616 registry): a candidate of theirs with
# a letter after the check digits is words a separator-tolerant scan swept in ("so 1967-11-30
# refund kind the" passes mod 97 as a Somali IBAN once in 97 tries).
_NUMERIC_BBAN = frozenset(
    [
        "AE",
        "AT",
        "BA",
        "BE",
        "BI",
        "CR",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "EE",
        "EG",
        "ES",
        "FI",
        "FO",
        "GL",
        "HR",
        "HU",
        "IL",
        "IS",
        "LT",
        "LY",
        "ME",
        "MN",
        "MR",
        "NO",
        "PL",
        "PT",
        "RS",
        "SD",
        "SE",
        "SI",
        "SK",
        "SO",
        "ST",
        "TL",
        "TN",
        "VA",
        "XK",
    ]
)


def _iban_ok(compact: str) -> bool:
    if compact[:2] in _NUMERIC_BBAN and not compact[4:].isdigit():
        return False
    # ISO 13616: move the first four characters to the end, letters become 10–35, mod 97 is 1.
    number = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(number) % 97 == 1


# --- Digit runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    start: int
    end: int
    digits: str
    paren: bool
    join: str  # the separators before this group ("" for the first)

    @property
    def spaced(self) -> bool:
        """Joined by white space only: a boundary where one number may end and another begin
        ("24/7", "15.03.2024" and "555-0199" are each one token)."""
        return bool(self.join) and not self.join.strip()


@dataclass(frozen=True)
class _Run:
    start: int  # at the "+" when there is one
    plus: bool
    groups: tuple[_Group, ...]

    def digits(self, first: int, last: int) -> str:
        return "".join(group.digits for group in self.groups[first : last + 1])

    def span(self, first: int, last: int) -> tuple[int, int]:
        start = self.start if first == 0 else self.groups[first].start
        return start, self.groups[last].end


def _runs(text: str) -> Iterator[_Run]:
    for match in _RUN.finditer(text):
        groups: list[_Group] = []
        previous = match.start() + 1 if match.group().startswith("+") else match.start()
        for found in _GROUPS.finditer(text, previous, match.end()):
            groups.append(
                _Group(
                    start=found.start(),
                    end=found.end(),
                    digits=_ascii_digits(found.group()),
                    paren=found.group().startswith("("),
                    join=text[previous : found.start()] if groups else "",
                )
            )
            previous = found.end()
        yield _Run(start=match.start(), plus=match.group().startswith("+"), groups=tuple(groups))


# --- Cards --------------------------------------------------------------------------------------


def _card_like(lengths: list[int]) -> bool:
    """Compact, fours (the last group shorter), or Diners/Amex 4-6-4 and 4-6-5."""
    return (
        len(lengths) == 1
        or (all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4)
        or lengths in ([4, 6, 4], [4, 6, 5])
    )


def _card_spans(text: str, *, card_like_only: bool) -> Iterator[tuple[int, int]]:
    """Leftmost, then longest, Luhn-valid windows of whole groups in each digit run."""
    for run in _runs(text):
        groups = run.groups
        first = 0
        while first < len(groups):
            found = None
            head = groups[first]
            if not (first == 0 and run.plus) and not head.paren and head.digits[0] != "0":
                ends: list[int] = []
                total = 0
                for last in range(first, len(groups)):
                    total += len(groups[last].digits)
                    if groups[last].paren or total > 19:
                        break
                    if total >= 13:
                        ends.append(last)
                for last in reversed(ends):
                    lengths = [len(g.digits) for g in groups[first : last + 1]]
                    if (not card_like_only or _card_like(lengths)) and _luhn_ok(
                        run.digits(first, last)
                    ):
                        found = last
                        break
            if found is None:
                first += 1
                continue
            yield run.span(first, found)
            first = found + 1


# --- IBANs --------------------------------------------------------------------------------------


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while head := _IBAN_HEAD.search(text, pos):
        pos = head.start() + 1
        country = head.group(1).upper()
        length = _IBAN_LENGTHS.get(country)
        if length is None and not head.group(1).isupper():
            continue
        chars = head.group(1).upper() + head.group(2)
        ends: list[int] = []  # where the IBAN may end: after a character, before no other
        i = head.end()
        while len(chars) < (length or 34):
            j = i
            while j < len(text) and j - i < 3 and _SEP_CHAR.match(text, j):
                j += 1
            if j < len(text) and text[j].isascii() and text[j].isalnum():
                chars += text[j].upper()
                i = j + 1
                ends.append(i)
            else:
                break
        glued = i < len(text) and text[i].isascii() and text[i].isalnum()
        if length is not None:
            if len(chars) == length and not glued and _iban_ok(chars):
                yield head.start(), i
                pos = i
            continue
        # Outside the registry: the longest cut at a token boundary that passes mod 97.
        for end in reversed(ends):
            size = len(chars) - (len(ends) - 1 - ends.index(end))
            boundary = end >= len(text) or not (text[end].isascii() and text[end].isalnum())
            if size >= 15 and boundary and _iban_ok(chars[:size]):
                yield head.start(), end
                pos = end
                break


# --- Phones -------------------------------------------------------------------------------------


def _context(text: str, start: int) -> str:
    """ "id" when an identifier word (or "#") is among the four words before `start`,
    "phone" when a phone word is, else ""."""
    before = _ANY_PLACEHOLDER.sub(" ", text[max(0, start - 40) : start])  # "[IBAN_1]" is no word
    words = [w.lower() for w in _WORDS.findall(before)][-4:]
    if any(w in _ID_WORDS or w == "#" for w in words):
        return "id"
    return "phone" if any(w in _PHONE_WORDS for w in words) else ""


def _starts_with_date(groups: Sequence[_Group]) -> bool:
    """01.02.2024 12, or exactly 03/15/24: a date, not a national number."""
    if len(groups) < 3:
        return False
    a, b, c = groups[:3]
    separator = b.join.strip()
    if len(separator) != 1 or c.join.strip() != separator or separator not in "./-":
        return False
    sizes = (len(a.digits), len(b.digits), len(c.digits))
    values = (int(a.digits), int(b.digits), int(c.digits))
    if sizes[0] == 4:
        year, day_month = values[0], values[1:]
        four_digit_year = True
    elif sizes[0] <= 2 and sizes[1] <= 2 and sizes[2] in (2, 4):
        year, day_month = values[2], values[:2]
        four_digit_year = sizes[2] == 4
    else:
        return False
    if four_digit_year and not 1900 <= year <= 2099:
        return False
    plausible = min(day_month) >= 1 and min(day_month) <= 12 and max(day_month) <= 31
    return plausible and (len(groups) == 3 or four_digit_year or groups[3].join != b.join)


def _glued_before(text: str, start: int) -> bool:
    before = text[start - 1] if start else " "
    if before.isalnum() or before in "_#$€£¥":
        return True
    return before in ",.:" and start >= 2 and text[start - 2].isdecimal()


def _glued_after(text: str, end: int) -> bool:
    after = text[end] if end < len(text) else " "
    if after.isalnum() or after in "_%":
        return True
    return after in ",:" and end + 1 < len(text) and text[end + 1].isdecimal()


def _nanp(digits: str) -> bool:
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return len(digits) == 10 and digits[0] not in "01" and digits[3] not in "01"


def _phone(text: str, run: _Run, first: int, last: int) -> bool:
    groups = run.groups[first : last + 1]
    digits = run.digits(first, last)
    start, end = run.span(first, last)
    if first == 0 and run.plus:
        return 7 <= len(digits) <= 16  # E.164, and a "(0)" trunk some write after the code
    if (first == 0 and _glued_before(text, start)) or (
        last == len(run.groups) - 1 and _glued_after(text, end)
    ):
        return False
    if _CURRENCY_BEFORE.search(text, max(0, start - 4), start) or _CURRENCY_AFTER.match(text, end):
        return False
    context = _context(text, start)
    if context == "id" or _starts_with_date(groups):
        return False
    if digits.startswith("00") and digits[2:3] not in ("", "0"):
        return 9 <= len(digits) <= 17
    sizes = [len(group.digits) for group in groups]
    separated = len(groups) > 1
    if digits[0] == "0":
        return (7 if separated else 10) <= len(digits) <= 12
    if sizes in ([3, 3, 4], [1, 3, 3, 4]) or (groups[0].paren and 7 <= len(digits) <= 12):
        return True
    if not separated and _nanp(digits):
        return True
    if sizes == [3, 4] and groups[1].join == "-":
        return True
    return context == "phone" and 7 <= len(digits) <= 15


def _phone_spans(text: str) -> Iterator[tuple[int, int]]:
    """The longest phone number from each group where one may begin to where one may end
    (before white space or the run's end). One begins at the run's start, after a phone
    number, or after white space and a short number or a date ("2 0171 2345678"), never
    inside a longer number (the digits of an IBAN that failed its check)."""
    for run in _runs(text):
        groups = run.groups
        first = since = 0  # since: the first group not part of a phone number found
        while first < len(groups):
            found = None
            skipped = groups[since:first] if first - since <= 3 else ()  # else not short
            may_begin = first == since or (
                groups[first].spaced
                and bool(skipped)
                and (
                    sum(len(g.digits) for g in skipped) <= 3
                    or (len(skipped) == 3 and _starts_with_date(skipped))
                )
            )
            if may_begin:
                for last in range(min(len(groups), first + 17) - 1, first - 1, -1):
                    can_end = last == len(groups) - 1 or groups[last + 1].spaced
                    if can_end and _phone(text, run, first, last):
                        found = last
                        break
            if found is None:
                first += 1
                continue
            yield run.span(first, found)
            first = since = found + 1


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    return (match.span() for match in _EMAIL.finditer(text))


_RULES: list[tuple[str, Callable[[str], Iterator[tuple[int, int]]]]] = [
    (EMAIL, _email_spans),
    (IBAN, _iban_spans),
    (CARD, partial(_card_spans, card_like_only=True)),
    (CARD, partial(_card_spans, card_like_only=False)),
    (PHONE, _phone_spans),
]


def _replace(text: str, spans: Iterable[tuple[int, int]], new: Callable[[str], str]) -> str:
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        parts += [text[pos:start], new(text[start:end])]
        pos = end
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

    for kind, spans in _RULES:
        text = _replace(text, list(spans(text)), partial(placeholder_for, kind))
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
    compact = _identity(kind, original)
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


def mask_payment(text: str) -> str:
    """Card numbers and IBANs in a draft masked to their last four, as `restore` shows them:
    a draft never repeats payment data in full, whichever model wrote it (the local tier sees
    the customer's raw text and may echo it)."""
    for kind, spans in _RULES:
        if kind in (IBAN, CARD):
            text = _replace(text, list(spans(text)), partial(_mask, kind))
    return text


def scrub(text: str) -> str:
    """Personal data replaced for good by unnumbered placeholders (`[EMAIL]`, `[CARD]` …), for
    text kept to show other conversations (few-shot examples). `restore` never matches them, so
    one customer's address can never be put back into another customer's draft."""
    redacted = redact(text)
    return _PLACEHOLDER.sub(lambda match: f"[{match.group(1)}]", redacted.text)


# --- Customer-specific details ----------------------------------------------------------------

_AMOUNT = re.compile(
    r"[$€£¥]\s?\d[\d.,]*|(?<![\d.,])\d[\d.,]*\s?(?:[$€£¥]|(?:EUR|USD|GBP|CHF|CAD|AUD|JPY)\b)"
    r"|\b(?:EUR|USD|GBP|CHF|CAD|AUD|JPY)\s?\d[\d.,]*",
    re.IGNORECASE,
)
_TIME = re.compile(r"(?<![\d:])\d{1,2}:\d{2}(?::\d{2})?(?![\d:])")
_YEAR = re.compile(r"(?<![\d.,:/-])(?:19|20)\d{2}(?![\d.,:/-]\d)")
_NUMBER_TOKEN = re.compile(r"\d+(?:[.,:/-]\d+)*")
_HASH_NUMBER = re.compile(r"(?:#|\b(?:no|nr|num)\.?)\s?\d+", re.IGNORECASE)
_MASKED = re.compile(r"•+\s?[0-9A-Za-z]{1,4}")  # a card or IBAN as `restore` shows it
_MIXED = re.compile(r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]+\b")
_UNIT = re.compile(
    r"\d+(?:st|nd|rd|th|am|pm|h|hrs?|mins?|s|secs?|d|x|k|kg|g|mg|lbs?|oz|cm|mm|m|km|ml|l|in|ft"
    r"|gb|mb|tb|kb|p|hz|w|kw|v|mah|mp)",
    re.IGNORECASE,
)
_STREET_WORDS = (
    r"(?i:street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl"
    r"|terrace|close|crescent|square|sq|highway|hwy|parkway|pkwy|circle|cir|alley|row|gardens"
    r"|grove|mews|rue|via|calle)"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][\w'’-]*\.?\s+){{0,3}}{_STREET_WORDS}\b\.?"
    r"|\b[A-Z][\w'’-]*(?i:straße|strasse|str\.|weg|gasse|platz|allee|damm|ring|ufer)\s*\d{1,4}"
    r"[a-z]?\b"
    r"|\b(?i:p\.?\s?o\.?\s?box|apt|apartment|suite|flat|unit)\.?\s*#?\d+[A-Za-z]?\b"
    # UK and Canadian postcodes (SW1A 1AA, K1A 0B1); numeric ones are four digits or more.
    r"|\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b|\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"
)
_NAME_WORD = r"[A-Z][^\W\d_]+(?:['’-][A-Z]?[^\W\d_]+)?"
_GREETING = re.compile(
    r"(?i:\b(?:hi|hello|hey|hiya|dear|thanks|thank\s+you|good\s+(?:morning|afternoon|evening)))"
    r"[ \t,]+(?:(?i:mr|mrs|ms|miss|mx|dr|prof)\.?\s+)?"
    rf"({_NAME_WORD})"
)
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+({_NAME_WORD})")
_INTRODUCED = re.compile(
    r"(?i:\b(?:i'?m|i\s+am|my\s+name\s+is|this\s+is|name\s*:)\s+)"
    rf"({_NAME_WORD}(?:\s+{_NAME_WORD})?)"
)
_SIGNED = re.compile(
    r"(?:(?i:\b(?:thanks|thank\s+you|regards|best|cheers|sincerely|best\s+wishes|br))[ \t]*"
    r"[,!.]?\s*|(?:^|\n)\s*[-–—]\s*)"
    rf"({_NAME_WORD}(?:\s+{_NAME_WORD})?)[.!]?\s*$"
)
_NOT_NAMES = frozenset(
    [
        "there",
        "team",
        "all",
        "everyone",
        "everybody",
        "folks",
        "customer",
        "customers",
        "friend",
        "friends",
        "sir",
        "madam",
        "again",
        "so",
        "guys",
        "support",
        "service",
        "you",
        "for",
        "and",
        "the",
        "in",
        "advance",
        "very",
        "much",
        "guest",
        "user",
        "visitor",
        "anonymous",
        "client",
    ]
)


@dataclass(frozen=True)
class Detail:
    """A customer-specific span that is not personal data by the redactor's rules."""

    kind: str  # NAME, NUMBER or ADDRESS
    start: int
    end: int


def _names(texts: Iterable[str], reference: str) -> set[str]:
    """Names a customer gave: introduced ("I'm Jane Doe") or signed ("Thanks, Jane") in what
    they wrote, and their reference's words of three letters or more (an email's local part)."""
    found: set[str] = set()
    for text in texts:
        for pattern in (_INTRODUCED, _SIGNED):
            for match in pattern.finditer(text):
                found.update(match.group(1).split())
    found.update(re.findall(r"[^\W\d_]{3,}", reference.split("@")[0]))
    return {name for name in found if name.casefold() not in _NOT_NAMES}


def customer_details(
    text: str, *, customer: Sequence[str] = (), reference: str = ""
) -> list[Detail]:
    """What in `text` belongs to one customer, beyond emails, phones, cards and IBANs, sorted.

    - NUMBER: a number of four digits or more (order, tracking and account numbers, postcodes,
      dates), except amounts with a currency, times and a lone year; a token mixing letters and
      digits (A1042, SW1A, 221B) unless it is a count with a unit (24h, 2nd, 10kg); a number
      after "#" or "No."; a masked card or IBAN ("•••• 4242"); any number of three digits or more that the customer wrote
      (`customer`: their messages) or their `reference` holds.
    - ADDRESS: a house number before a street word (12 Baker Street), a German-style street
      and number (Hauptstraße 5), a PO box, flat or suite number.
    - NAME: a name after a greeting or an honorific (Hi Jane, Dear Mr Smith), and any name the
      customer gave: introduced or signed in `customer`, or a word of their `reference`.
    Heuristics, tuned to refuse rather than to miss: a name the customer never gave and no
    greeting introduces is not found.
    """
    details: list[Detail] = []
    allowed = [m.span() for p in (_AMOUNT, _TIME, _YEAR) for m in p.finditer(text)]

    def inside_allowed(start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in allowed)

    customer_numbers = {
        m.group() for t in (*customer, reference) for m in re.finditer(r"\d{3,}", t)
    }
    for match in _NUMBER_TOKEN.finditer(text):
        if inside_allowed(*match.span()):
            continue
        digits = sum(c.isdecimal() for c in match.group())
        shared = any(n in customer_numbers for n in re.findall(r"\d{3,}", match.group()))
        if digits >= 4 or shared:
            details.append(Detail(NUMBER, *match.span()))
    for match in _MIXED.finditer(text):
        digits = sum(c.isdecimal() for c in match.group())
        letters_around = match.group()[0].isalpha() and match.group()[-1].isalpha()
        if not _UNIT.fullmatch(match.group()) and (digits >= 2 or letters_around):
            details.append(Detail(NUMBER, *match.span()))
    details += [
        Detail(NUMBER, *m.span()) for p in (_HASH_NUMBER, _MASKED) for m in p.finditer(text)
    ]
    details += [Detail(ADDRESS, *m.span()) for m in _ADDRESS.finditer(text)]
    for pattern in (_GREETING, _HONORIFIC):
        for match in pattern.finditer(text):
            if match.group(1).casefold() not in _NOT_NAMES:
                details.append(Detail(NAME, *match.span(1)))
    for name in _names(customer, reference):
        for match in re.finditer(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
            if match.group()[0].isupper():
                details.append(Detail(NAME, *match.span()))
    return sorted(set(details), key=lambda d: (d.start, -d.end))


def personal_kinds(text: str, *, customer: Sequence[str] = (), reference: str = "") -> list[str]:
    """The kinds of personal data and customer-specific details in `text`, for a decision and
    a log line (never the values): EMAIL, PHONE, CARD, IBAN, NAME, NUMBER, ADDRESS."""
    details = customer_details(text, customer=customer, reference=reference)
    return sorted(set(redact(text).counts) | {detail.kind for detail in details})


def scrub_details(text: str, *, customer: Sequence[str] = (), reference: str = "") -> str:
    """`scrub`, then customer-specific details (`customer_details`) replaced by `[NAME]`,
    `[NUMBER]` and `[ADDRESS]`: text that keeps a reply's shape and tone and no customer."""
    text = scrub(text)
    merged: list[Detail] = []
    for detail in customer_details(text, customer=customer, reference=reference):
        if merged and detail.start < merged[-1].end:  # overlapping: widen the first one
            last = merged[-1]
            merged[-1] = Detail(last.kind, last.start, max(last.end, detail.end))
        else:
            merged.append(detail)
    parts: list[str] = []
    pos = 0
    for detail in merged:
        parts += [text[pos : detail.start], f"[{detail.kind}]"]
        pos = detail.end
    return "".join([*parts, text[pos:]])
