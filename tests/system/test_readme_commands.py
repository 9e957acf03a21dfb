"""The README's commands work as written in a plain shell (issue 17).

A new user ran `.venv/bin/python manage.py simulate --count 20` in a second terminal while
`make run` ran, as the README says, and got `ImproperlyConfigured: DJANGO_SECRET_KEY is
required when DJANGO_DEBUG is off`: nothing `make run` chose was in that shell. `make run` now
writes what it uses to var/local.env (csbot.localenv) and the settings read it.

Here: a copy of the checkout's code (its own var/, the project's virtualenv), var/local.env
written by the function scripts/run.sh calls, pointing at the test database; then every
`manage.py` command the README shows, run with `env -i` (no variable exported by hand): the
demo seeding and `simulate` for real (against a live test server, a small count), the others'
`--help`, each expected to exit 0.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from csbot.demo import DEMO_TEAM
from csbot.localenv import local_env_path, local_env_read, local_env_write
from csbot.models import Message

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CODE = ("manage.py", "csbot", "drafting", "accounting", "templates")
# Run as written (small): they write only demo data into the test database.
RUN = {"seed_demo", "accounting_defaults", "simulate"}
# `env -i`: the process gets PATH and HOME and nothing else.
CLEAN_ENV = ("/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin")
COMMAND = re.compile(r"(?:(?:\.venv/bin/)?python )?manage\.py ([a-z_]+)([^`\n]*)")


def readme_commands() -> dict[str, list[str]]:
    """Command name -> the README's ways of writing it (code spans and code blocks)."""
    text = README.read_text()
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    spans += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found: dict[str, list[str]] = {}
    for span in spans:
        for match in COMMAND.finditer(span):
            found.setdefault(match.group(1), []).append(match.group(0).strip())
    return found


def test_the_readme_shows_the_commands_a_new_user_runs() -> None:
    commands = readme_commands()
    assert {"simulate", "seed_demo", "knowledge_import", "encs_report"} <= set(commands)
    assert ".venv/bin/python manage.py simulate --count 20" in commands["simulate"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The code as a fresh clone has it (no var/), with the project's virtualenv."""
    root = tmp_path / "csbot"
    root.mkdir()
    for name in CODE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv")
    return root


def database_url() -> str:
    """The test database, as DATABASE_URL (what `make run` would point at its own)."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def plain_shell(checkout: Path, command: str, *, timeout: int = 180) -> Any:
    """`command` in `checkout` with nothing in the environment but PATH and HOME."""
    home = checkout.parent / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(  # noqa: S603 - our own commands
        [*CLEAN_ENV, f"HOME={home}", "bash", "-c", command],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_every_manage_py_command_of_the_readme_runs_in_a_plain_shell(
    checkout: Path, live_server: Any
) -> None:
    # What scripts/run.sh writes (its values: DEBUG on, a per-process cache), on the test DB.
    path = local_env_write(
        checkout / "var",
        {"DATABASE_URL": database_url(), "DJANGO_DEBUG": "1", "CACHE_URL": "locmem://"},
    )
    assert path == local_env_path(checkout / "var")
    assert path.stat().st_mode & 0o777 == 0o600
    assert local_env_read(path)["DJANGO_SECRET_KEY"]

    commands = readme_commands()
    # Seeding first: simulate posts to the demo team's channel.
    order = sorted(commands, key=lambda name: (name not in ("seed_demo", "accounting_defaults"),))
    failures = []
    for name in order:
        if name == "seed_demo":
            # The past (60 days) is slow to write and has tests of its own.
            lines = [".venv/bin/python manage.py seed_demo --no-history"]
        elif name == "simulate":
            written = next(c for c in commands[name] if c.startswith(".venv/bin/python"))
            small = re.sub(r"--count \d+", "--count 2", written)
            lines = [f"{small} --interval 0 --url {shlex.quote(live_server.url)}"]
        elif name in RUN:
            lines = [f".venv/bin/python manage.py {name}"]
        else:
            lines = [f".venv/bin/python manage.py {name} --help"]
        for line in lines:
            result = plain_shell(checkout, line)
            if result.returncode != 0:
                failures.append((line, result.returncode, result.stderr[-1500:]))
    assert failures == [], "\n\n".join(map(str, failures))
    # simulate reached the live server with the demo team's channel, on the same database.
    assert Message.objects.filter(conversation__team__name=DEMO_TEAM).count() >= 2
    assert Message.objects.filter(conversation__external_id__startswith="sim-").count() == 2


def test_without_local_env_a_plain_shell_still_gets_the_clear_error(checkout: Path) -> None:
    """No var/local.env (production, or before `make run`): nothing is assumed."""
    result = plain_shell(checkout, ".venv/bin/python manage.py check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr
