"""Knowledge articles into chunks: what retrieval finds and what a draft cites.

Pure functions, no database. `search_config` picks the PostgreSQL text-search configuration for
an article's language (the stemmer its tsvector is built with, and a query must use).
"""

from __future__ import annotations

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
