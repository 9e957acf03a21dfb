"""The composer tools' prompts: rewrite an agent's reply (shorten, friendlier, more formal, fix
grammar, translate into the customer's language) before it is sent.

Pure: no database, no I/O. `drafting.services.composer_rewrite` picks the tier, masks personal
data for a paid one, asks it and records the attempt; this module only says what to ask
(`composer_messages`), how long an answer may be (`output_budget`), which language the
customer writes in (`detect_language`) and how to take the model's answer (`clean_rewrite`).

Every tool keeps the reply's facts: names, numbers, links, order references and PII
placeholders (`[EMAIL_1]`, put back after a paid tier answered) must survive the rewrite, and
nothing may be added that the agent did not write. A model's answer is the new reply text
only; small models like to wrap it ("Here is the rewritten text:", quotes, code fences), which
`clean_rewrite` takes off.

Language detection is deliberately small (no dependency): a message's script decides for
scripts that belong to one language (Greek, Hebrew, Thai, Korean, Japanese kana…), and for
Latin-script languages the share of each language's commonest short words decides when one
language clearly leads. When unsure it returns None and the translate prompt shows the model
the customer's message and asks for that message's language instead: the model decides.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from drafting.engine.prompting import CHARS_PER_TOKEN
from drafting.models import DraftAttempt

Purpose = DraftAttempt.Purpose


@dataclass(frozen=True)
class Tool:
    purpose: str  # DraftAttempt.Purpose value, recorded on the attempt
    label: str  # the button's visible label
    instruction: str  # what the model is asked to do to the reply


TOOLS: dict[str, Tool] = {
    tool.purpose: tool
    for tool in (
        Tool(
            Purpose.SHORTEN,
            "Shorten",
            "Make the reply shorter and more direct: keep every fact, step, number and "
            "commitment, drop repetition and filler.",
        ),
        Tool(
            Purpose.FRIENDLIER,
            "Friendlier",
            "Make the reply warmer and friendlier, as a kind person would write it, without "
            "becoming longer than needed or adding facts.",
        ),
        Tool(
            Purpose.FORMAL,
            "More formal",
            "Make the reply more formal and professional in tone (no slang, no contractions), "
            "keeping it as clear and about as long.",
        ),
        Tool(
            Purpose.GRAMMAR,
            "Fix grammar",
            "Correct the reply's spelling, grammar and punctuation only. Change nothing else: "
            "keep its wording, tone, language and line breaks where they are correct.",
        ),
        Tool(Purpose.TRANSLATE, "Translate", "Translate the reply."),  # see composer_messages
    )
}

# The rules go in the system message, the tool's instruction and the text in the user's: a
# small local model (SmolLM2-135M) given the text alone as the user's turn answers it as a
# customer's message instead of rewriting it; asked in the same turn, it rewrites.
SYSTEM = (
    "You rewrite a customer-support agent's reply as asked, before it is sent to the customer. "
    "Keep the meaning; keep names, numbers, prices, dates, links, order references and "
    "placeholders in square brackets (such as [EMAIL_1]) exactly as written; add no greeting, "
    "fact, promise or signature the reply does not already have. Answer with the rewritten "
    "reply only: no introduction, no quotation marks, no notes."
)


# ISO 639-1 code → the English name a model understands in an instruction.
LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}

# Each Latin-script language's commonest short words (function words: articles, pronouns,
# prepositions, auxiliaries), chosen to overlap little between the languages.
_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the and is are you your my to of it that this have has with for not was what "
        "can please would will be i we me do does did where when how thanks thank hello",
        "fr": "le la les et est je vous mon ma mes une des du ne pas pour avec qui que sur "
        "dans ce cette merci bonjour votre nous suis avez où quand comment au aux",
        "de": "der die das und ist ich sie nicht ein eine mit für auf ist mein meine wo wann "
        "wie bitte danke hallo haben habe ihr ihre wir uns zu dem den auch noch",
        "es": "el la los las y es yo usted mi mis un una con para por que no en del al dónde "
        "cuándo cómo gracias hola tengo pedido su sus está estoy hay",
        "it": "il lo la gli le e è io lei mio mia un una con per che non del della dove "
        "quando come grazie ciao ho ordine sono suo sua questo",
        "pt": "o a os as e é eu você meu minha um uma com para que não do da onde quando "
        "como obrigado obrigada olá tenho pedido seu sua está estou",
        "nl": "de het een en is ik u jij mijn niet met voor op van waar wanneer hoe bedankt "
        "dank hallo heb hebt heeft mijn bestelling graag wij zijn",
        "sv": "och är jag du min mitt inte en ett med för på av var när hur tack hej har "
        "beställning det den vi",
        "da": "og er jeg du min mit ikke en et med for på af hvor hvornår hvordan tak hej "
        "har bestilling det den vi",
        "pl": "i jest ja pan pani mój moja nie z dla na w gdzie kiedy jak dziękuję dzień "
        "dobry mam zamówienie to się czy",
        "tr": "ve bir bu ben siz benim değil ile için ne nerede zaman nasıl teşekkür "
        "merhaba sipariş var mı mi",
    }.items()
}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
# The least share of a message's words that must be one language's, and by how much the
# best language must lead the second, before a Latin-script message is said to be in it.
_MIN_SHARE = 0.12
_MIN_LEAD = 1.5


# Unicode character-name prefixes of the scripts told apart, and what each counts as: a language
# code where one of LANGUAGE_NAMES' languages alone is written in it, else the script (han,
# cyrillic: _script_language decides). Anything else counts as latin.
_SCRIPTS = (
    ("HIRAGANA", "ja"),
    ("KATAKANA", "ja"),
    ("HANGUL", "ko"),
    ("CJK", "han"),
    ("GREEK", "el"),
    ("HEBREW", "he"),
    ("ARABIC", "ar"),
    ("THAI", "th"),
    ("DEVANAGARI", "hi"),
    ("CYRILLIC", "cyrillic"),
)


def _script_language(text: str) -> str | None:
    """The language of a script only one of LANGUAGE_NAMES' languages is written in, when it
    makes up most of the message's letters."""
    scripts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        script = next((code for prefix, code in _SCRIPTS if name.startswith(prefix)), "latin")
        scripts[script] += 1
    letters = sum(scripts.values())
    if not letters:
        return None
    script, count = scripts.most_common(1)[0]
    if script == "latin" or count * 2 < letters:
        return None
    if script == "han":
        # Japanese mixes kanji with kana; kanji alone is Chinese.
        return "ja" if scripts["ja"] else "zh"
    if script == "cyrillic":
        return "uk" if re.search(r"[іїєґІЇЄҐ]", text) else "ru"
    return script


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language `text` is written in, or None when unsure (too
    short, mixed, or a language this small detector does not know)."""
    by_script = _script_language(text)
    if by_script is not None:
        return by_script
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 3:
        return None
    counts = Counter({lang: sum(w in vocab for w in words) for lang, vocab in _WORDS.items()})
    (best, first), (_, second) = counts.most_common(2)
    if first / len(words) < _MIN_SHARE or first < _MIN_LEAD * second:
        return None
    return best


def composer_messages(
    *, tool: str, text: str, customer_text: str = "", language: str | None = None
) -> list[dict[str, str]]:
    """The chat messages asking for `tool` applied to the agent's `text`. Translate targets
    `language` (an ISO code, the customer's, from `detect_language`); unknown, the model is
    shown the customer's last message (`customer_text`) and asked for its language. KeyError
    for an unknown tool."""
    instruction = TOOLS[tool].instruction
    if tool == Purpose.TRANSLATE:
        name = LANGUAGE_NAMES.get(language or "")
        if name is not None:
            instruction = (
                f"Translate the reply into {name}, the customer's language, as a native "
                f"speaker would write it. If it already is in {name}, return it unchanged."
            )
        else:
            instruction = (
                "Translate the reply into the language the customer wrote their message in "
                f"(the customer's message, between the markers: <<<{customer_text.strip()}>>>), "
                "as a native speaker would write it."
            )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{instruction}\n\n{text}"},
    ]


def output_budget(text: str, *, floor: int) -> int:
    """Tokens the answer may take: a rewrite is about as long as the text (a translation may
    take twice its tokens, in another script more), never fewer than the endpoint's own
    `floor` (its max_output_tokens)."""
    return max(floor, 2 * (len(text) // CHARS_PER_TOKEN) + 64)


_PREAMBLE = re.compile(
    r"\A\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is| are)|below is)\b[^\n:]{0,80}:\s*\n+", re.I
)
_FENCE = re.compile(r"\A```[^\n]*\n(.*)\n```\s*\Z", re.S)
_QUOTES = (('"', '"'), ("“", "”"), ("«", "»"), ("'", "'"))


def clean_rewrite(answer: str, *, original: str) -> str:
    """The model's answer as the new reply: without an introduction line ("Here is the
    shorter reply:"), a code fence or quotation marks around the whole text (unless the
    agent's own text was quoted so), and without surrounding white space."""
    text = answer.strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    for opening, closing in _QUOTES:
        quoted = len(text) >= 2 and text.startswith(opening) and text.endswith(closing)
        if quoted and not original.strip().startswith(opening):
            text = text[len(opening) : -len(closing)].strip()
            break
    return text
