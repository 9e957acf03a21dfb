"""PII redaction before non-local tiers: what is caught, what is left alone, and restoring."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drafting.pii import Redaction, redact, redact_messages, restore

VALID_CARDS = ["4242 4242 4242 4242", "5555-5555-5555-4444", "378282246310005", "3782 822463 10005"]
VALID_IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "gb82 west 1234 5698 7654 32",
]
PHONES = [
    "+44 20 7946 0958",
    "+1 (555) 123-4567",
    "+4915112345678",
    "(555) 123-4567",
    "555-123-4567",
    "555.123.4567",
    "0171 2345678",
    "07946 095895",
    "030/1234567",
    "01 23 45 67 89",
]
NOT_PII = [
    "Your order #A1042 has shipped.",
    "Regarding order 123456, please advise.",
    "It cost $1,299.00 including tax.",
    "Delivered on 2024-03-15 at 10:30.",
    "Delivered on 15.03.2024 or 03/15/2024.",
    "Reference 12345678, 3 items, 20% off.",
    "Shipped 01.02.2024 12 boxes, tracking 1Z999AA10123456784.",
]


def test_an_email_becomes_a_typed_placeholder() -> None:
    result = redact("Write to jane.doe+orders@example.co.uk please.")

    assert result.text == "Write to [EMAIL_1] please."
    assert result.placeholders == {"[EMAIL_1]": "jane.doe+orders@example.co.uk"}


@pytest.mark.parametrize("card", VALID_CARDS)
def test_a_card_number_that_passes_luhn_is_replaced(card: str) -> None:
    result = redact(f"My card is {card}, thanks")

    assert result.text == "My card is [CARD_1], thanks"
    assert result.placeholders["[CARD_1]"] == card


@pytest.mark.parametrize(
    "number", ["4242 4242 4242 4241", "1234567812345678", "1Z 9999 9999 9999 9999"]
)
def test_a_card_shaped_number_that_fails_luhn_is_left_alone(number: str) -> None:
    # Tracking and order numbers are 13–19 digits too; Luhn is what tells a card apart.
    text = f"Tracking {number} please"

    assert redact(text).text == text


def test_a_cvv_typed_after_the_card_number_does_not_hide_the_card() -> None:
    result = redact("card 4242 4242 4242 4242 123 exp 12/25")

    assert result.text == "card [CARD_1] 123 exp 12/25"


def test_a_card_is_found_after_a_longer_number_that_fails_luhn() -> None:
    # The rejected run must not swallow the start of the real card that follows it.
    result = redact("ref 1234 5678 9012 3456 7890 4242 4242 4242 4242")

    assert result.text == "ref 1234 5678 9012 3456 7890 [CARD_1]"


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_an_iban_that_passes_mod_97_is_replaced(iban: str) -> None:
    result = redact(f"Refund to {iban} ASAP")

    assert result.text == "Refund to [IBAN_1] ASAP"
    assert result.placeholders["[IBAN_1]"] == iban


@pytest.mark.parametrize("iban", ["DE88 3704 0044 0532 0130 00", "GB82WEST12345698765431"])
def test_an_iban_with_a_wrong_check_is_not_an_iban(iban: str) -> None:
    text = f"Refund to {iban}"

    assert redact(text).text == text


@pytest.mark.parametrize("phone", PHONES)
def test_a_phone_number_in_a_common_format_is_replaced(phone: str) -> None:
    result = redact(f"Call me on {phone}.")

    assert result.text == "Call me on [PHONE_1]."
    assert result.placeholders["[PHONE_1]"] == phone


def test_a_number_typed_after_a_phone_number_does_not_hide_the_phone() -> None:
    result = redact("ring +44 20 7946 0958 12345 or 0171 2345678 24/7")

    assert result.text == "ring [PHONE_1] 12345 or [PHONE_2] 24/7"


@pytest.mark.parametrize("text", NOT_PII)
def test_order_numbers_prices_dates_and_times_are_not_redacted(text: str) -> None:
    result = redact(text)

    assert result.text == text
    assert result.placeholders == {}


def test_the_same_value_twice_gets_the_same_placeholder() -> None:
    result = redact(
        "jane@example.com, JANE@example.com, 4242 4242 4242 4242, 4242424242424242, bob@example.com"
    )

    assert result.text == "[EMAIL_1], [EMAIL_1], [CARD_1], [CARD_1], [EMAIL_2]"
    assert result.counts == {"EMAIL": 2, "CARD": 1}


def test_all_kinds_in_one_text_are_numbered_per_kind() -> None:
    result = redact(
        "I'm jane@example.com, +44 20 7946 0958. Pay DE89 3704 0044 0532 0130 00 "
        "not 4242 4242 4242 4242; or mail bob@example.com"
    )

    assert result.text == ("I'm [EMAIL_1], [PHONE_1]. Pay [IBAN_1] not [CARD_1]; or mail [EMAIL_2]")
    assert result.counts == {"EMAIL": 2, "PHONE": 1, "IBAN": 1, "CARD": 1}


def test_start_continues_an_earlier_mapping_without_changing_it() -> None:
    first = redact("jane@example.com")
    second = redact("bob@example.com and jane@example.com", start=first.placeholders)

    assert second.text == "[EMAIL_2] and [EMAIL_1]"
    assert first.placeholders == {"[EMAIL_1]": "jane@example.com"}


def test_redact_messages_shares_one_mapping_across_the_conversation() -> None:
    messages = [
        {"role": "system", "content": "You draft replies for Acme support."},
        {"role": "user", "content": "I'm jane@example.com, call +44 20 7946 0958"},
        {"role": "assistant", "content": "Thanks! Is jane@example.com right?"},
        {"role": "user", "content": "Yes. Also bob@example.com. Card 4242 4242 4242 4242"},
    ]

    redacted, placeholders = redact_messages(messages)

    assert [m["content"] for m in redacted] == [
        "You draft replies for Acme support.",
        "I'm [EMAIL_1], call [PHONE_1]",
        "Thanks! Is [EMAIL_1] right?",
        "Yes. Also [EMAIL_2]. Card [CARD_1]",
    ]
    assert [m["role"] for m in redacted] == ["system", "user", "assistant", "user"]
    assert placeholders == {
        "[EMAIL_1]": "jane@example.com",
        "[PHONE_1]": "+44 20 7946 0958",
        "[EMAIL_2]": "bob@example.com",
        "[CARD_1]": "4242 4242 4242 4242",
    }
    assert messages[1]["content"] == "I'm jane@example.com, call +44 20 7946 0958"


def test_restore_puts_back_contact_details_and_masks_payment_data() -> None:
    placeholders = redact(
        "jane@example.com +44 20 7946 0958 4242 4242 4242 4242 DE89 3704 0044 0532 0130 00"
    ).placeholders
    draft = "We'll mail [EMAIL_1] or ring [PHONE_1]; refund to card [CARD_1] or [IBAN_1]."

    assert restore(draft, placeholders) == (
        "We'll mail jane@example.com or ring +44 20 7946 0958; "
        "refund to card •••• 4242 or DE89 •••• 3000."
    )


def test_restore_leaves_invented_or_mangled_placeholders_as_written() -> None:
    placeholders = {"[EMAIL_1]": "jane@example.com"}
    draft = "Hi [EMAIL_1], [EMAIL_2], [email_1], [EMAIL 1], [NAME_1]"

    assert restore(draft, placeholders) == (
        "Hi jane@example.com, [EMAIL_2], [email_1], [EMAIL 1], [NAME_1]"
    )


def test_redaction_is_a_frozen_value() -> None:
    result = redact("jane@example.com")

    assert isinstance(result, Redaction)
    with pytest.raises(AttributeError):
        result.text = "changed"  # type: ignore[misc]


_emails = st.from_regex(
    r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9][a-z0-9-]{0,10}\.(com|org|de|co\.uk)", fullmatch=True
)
# Filler words with digits and punctuation, so numbers and emails sit side by side.
_words = st.text(alphabet=string.ascii_letters + string.digits + ",.!?#$:%", max_size=12)


@given(st.lists(st.one_of(_emails, _words), max_size=12))
def test_redacted_text_never_contains_an_original_email_and_restores_exactly(
    parts: list[str],
) -> None:
    text = " ".join(parts)
    emails = [part for part in parts if "@" in part]

    result = redact(text)

    for email in emails:
        assert email not in result.text
    assert "@" not in result.text
    # Fillers can still line up into a card ("4242 4242 4242 4242"), which restores masked.
    if not {"CARD", "IBAN"} & result.counts.keys():
        assert restore(result.text, result.placeholders) == text
