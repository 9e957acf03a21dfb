"""A small hand-written demo set (not one of the shared datasets) for `make run` and `simulate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

# The demo team's name: seed_demo creates it, its past (csbot.demo.history) is written for it.
DEMO_TEAM = "Demo Support"


class DemoConversation(TypedDict):
    customer: str
    messages: list[str]


def demo_conversations() -> list[DemoConversation]:
    path = Path(__file__).with_name("conversations.json")
    data: list[DemoConversation] = json.loads(path.read_text())
    return data


def demo_knowledge_files() -> list[tuple[str, bytes]]:
    """The demo team's knowledge base (articles as Markdown, macros as JSON): what its drafts
    are grounded in, imported by `seed_demo` as any team's files would be."""
    folder = Path(__file__).with_name("knowledge")
    return [(path.name, path.read_bytes()) for path in sorted(folder.iterdir()) if path.is_file()]
