"""A small hand-written demo set (not one of the shared datasets) for `make run` and `simulate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict


class DemoConversation(TypedDict):
    customer: str
    messages: list[str]


def demo_conversations() -> list[DemoConversation]:
    path = Path(__file__).with_name("conversations.json")
    data: list[DemoConversation] = json.loads(path.read_text())
    return data
