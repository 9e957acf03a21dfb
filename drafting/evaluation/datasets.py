"""Where the public data sets are read from, in place (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

# drafting/evaluation/datasets.py → the repository root is two folders up from drafting/.
REPOSITORY = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """The public data sets: `CSBOT_SHARED_DATA`, else `shared/data` beside the repository."""
    configured = os.environ.get("CSBOT_SHARED_DATA")
    if configured:
        return Path(configured)
    return REPOSITORY.parent / "shared" / "data"
