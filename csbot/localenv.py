"""The environment `make run` used, kept in var/local.env for commands run beside it.

`make run` (scripts/run.sh) chooses settings that a plain shell does not have: the embedded
PostgreSQL's URL, DJANGO_DEBUG=1, a per-process cache. The README then tells the user to run
`.venv/bin/python manage.py simulate --count 20` in another terminal, where none of that is
exported, and the settings refused to start (no DJANGO_SECRET_KEY with DEBUG off). So run.sh
writes what it uses to `<CSBOT_VAR_DIR>/local.env` (mode 600; a secret key generated once and
kept there across runs), and csbot.settings reads that file when it exists, for the variables
the environment does not set: the environment always wins.

Production never has the file: it lives in the checkout's var/ folder, which no image copies
(the Dockerfile copies code only), and nothing but run.sh writes it. Delete it (or
`make clean`) to forget the local choices.

No Django import here: csbot.settings loads this module before Django is configured.

    python -m csbot.localenv write VAR_DIR NAME...   # the named variables of this environment
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

FILE_NAME = "local.env"
SECRET_KEY_NAME = "DJANGO_SECRET_KEY"  # noqa: S105 - the variable's name, not a key
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def local_env_path(var_dir: Path) -> Path:
    return var_dir / FILE_NAME


def local_env_read(path: Path) -> dict[str, str]:
    """The file's `NAME=value` lines (values shell-quoted, so `. var/local.env` works too);
    {} when there is no file. A malformed line raises ValueError naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, raw = line.partition("=")
        words = shlex.split(raw) if sep else []
        if not _NAME.fullmatch(name) or len(words) > 1:
            raise ValueError(f"{path}:{number}: not a NAME=value line")
        values[name] = words[0] if words else ""
    return values


def local_env_write(var_dir: Path, values: Mapping[str, str]) -> Path:
    """Write `values` to var_dir/local.env, readable by this user only, with a secret key: the
    one already in the file when there is one (sessions and signed values survive a restart),
    else a new one. Returns the file's path.

    Steps: keep the old key, check the names, write a temporary file with mode 600, move it
    over the old one (a reader never sees half a file)."""
    path = local_env_path(var_dir)
    kept = local_env_read(path).get(SECRET_KEY_NAME) or secrets.token_urlsafe(50)
    merged = {**values, SECRET_KEY_NAME: values.get(SECRET_KEY_NAME) or kept}
    for name, value in merged.items():
        if not _NAME.fullmatch(name) or "\n" in value:
            raise ValueError(f"{name!r} cannot go into {path}")
    lines = [
        "# Written by `make run` (scripts/run.sh; csbot.localenv): the settings it ran with, for",
        "# commands run beside it in a plain shell. Variables set in the environment win.",
        *(f"{name}={shlex.quote(value)}" for name, value in sorted(merged.items())),
    ]
    var_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    temporary.replace(path)
    return path


def local_env_load(var_dir: Path, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set the file's variables that `environ` lacks; the names set, in the file's order."""
    added = []
    for name, value in local_env_read(local_env_path(var_dir)).items():
        if name not in environ:
            environ[name] = value
            added.append(name)
    return added


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "write":
        sys.stderr.write("usage: python -m csbot.localenv write VAR_DIR NAME...\n")
        return 2
    var_dir, names = Path(argv[1]), argv[2:]
    path = local_env_write(var_dir, {n: os.environ[n] for n in names if n in os.environ})
    sys.stdout.write(f"[run] {path}: {', '.join(sorted(local_env_read(path)))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
