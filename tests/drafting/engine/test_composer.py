"""The composer tools' prompts (drafting.engine.composer): one tool per DraftAttempt purpose,
the translate target from the customer's message, and the model's answer taken as the reply."""

from __future__ import annotations

import pytest

from drafting.engine.composer import (
    TOOLS,
    clean_rewrite,
    composer_messages,
    detect_language,
    output_budget,
)
from drafting.models import DraftAttempt


def test_there_is_one_tool_per_composer_purpose() -> None:
    assert set(TOOLS) == DraftAttempt.COMPOSER_PURPOSES


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello, where is my parcel? I ordered it two weeks ago.", "en"),
        ("Bonjour, où est mon colis ? Je l'ai commandé il y a deux semaines.", "fr"),
        ("Hallo, wo ist mein Paket? Ich habe es vor zwei Wochen bestellt.", "de"),
        ("Hola, ¿dónde está mi pedido? Lo compré hace dos semanas.", "es"),
        ("Ciao, dove è il mio ordine? Non è ancora arrivato.", "it"),
        ("Hallo, waar is mijn bestelling? Ik heb het twee weken geleden besteld.", "nl"),
        ("Здравствуйте, где моя посылка?", "ru"),
        ("Добрий день, де моя посилка? Я її чекаю.", "uk"),
        ("荷物はどこですか？", "ja"),
        ("我的包裹在哪里？", "zh"),
        ("Γεια σας, πού είναι το δέμα μου;", "el"),
        ("ok", None),  # too short to tell
        ("12345 #A-77", None),
    ],
)
def test_the_customers_language_is_detected_or_left_to_the_model(
    text: str, language: str | None
) -> None:
    assert detect_language(text) == language


def test_translate_names_the_language_or_shows_the_customers_message() -> None:
    named = composer_messages(tool="translate", text="Your refund is done.", language="fr")
    assert "into French" in named[1]["content"]
    assert named[1]["content"].endswith("\n\nYour refund is done.")
    unknown = composer_messages(
        tool="translate", text="Your refund is done.", customer_text="Hoi, waar blijft het?"
    )
    assert "<<<Hoi, waar blijft het?>>>" in unknown[1]["content"]


def test_every_tool_keeps_facts_and_asks_for_the_text_only() -> None:
    for tool in TOOLS:
        system, user = composer_messages(tool=tool, text="Text.")
        assert "[EMAIL_1]" in system["content"] and "rewritten reply only" in system["content"]
        assert user["content"].startswith(TOOLS[tool].instruction.split()[0])
    with pytest.raises(KeyError):
        composer_messages(tool="summarise", text="x")


def test_the_answer_is_taken_without_its_wrapping() -> None:
    original = "we shipped it yesterday, u will get it tomorow"
    assert clean_rewrite("Here is the corrected reply:\n\nWe shipped it.", original=original) == (
        "We shipped it."
    )
    assert clean_rewrite('"We shipped it."', original=original) == "We shipped it."
    assert clean_rewrite("```\nWe shipped it.\n```", original=original) == "We shipped it."
    # A reply the agent quoted stays quoted; line breaks inside stay.
    assert clean_rewrite('"Quoted."', original='"quoted"') == '"Quoted."'
    assert clean_rewrite("  Hi,\n\nThanks.  ", original=original) == "Hi,\n\nThanks."


def test_the_answer_may_be_as_long_as_a_translation_needs() -> None:
    assert output_budget("short", floor=256) == 256
    assert output_budget("x" * 4000, floor=256) == 2064
