"""var/local.env (csbot.localenv): what `make run` ran with, for commands run beside it; the
environment always wins, and the secret key is generated once and kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from csbot.localenv import local_env_load, local_env_path, local_env_read, local_env_write

ROOT = Path(__file__).resolve().parents[2]


def test_the_file_is_private_and_keeps_its_secret_key_across_runs(tmp_path: Path) -> None:
    first = local_env_write(tmp_path, {"DATABASE_URL": "postgres://a:b@h:1/db", "X_Y": "a b'c"})
    assert first.stat().st_mode & 0o777 == 0o600
    values = local_env_read(first)
    assert values["X_Y"] == "a b'c"  # shell-quoted, read back as written
    key = values["DJANGO_SECRET_KEY"]
    assert len(key) >= 50

    again = local_env_write(tmp_path, {"DJANGO_DEBUG": "1"})
    assert local_env_read(again) == {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": key}
    assert [p.name for p in tmp_path.iterdir()] == ["local.env"]  # no temporary file left


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    local_env_write(tmp_path, {"DJANGO_DEBUG": "1", "CACHE_URL": "locmem://"})
    environ = {"DJANGO_DEBUG": "0"}
    assert local_env_load(tmp_path, environ) == ["CACHE_URL", "DJANGO_SECRET_KEY"]
    assert environ["DJANGO_DEBUG"] == "0"
    assert environ["CACHE_URL"] == "locmem://"
    assert local_env_load(tmp_path / "missing", environ) == []


def test_a_malformed_file_is_refused_with_its_line(tmp_path: Path) -> None:
    local_env_path(tmp_path).write_text("DJANGO_DEBUG=1\nnot a line\n")
    with pytest.raises(ValueError, match=r"local\.env:2"):
        local_env_read(local_env_path(tmp_path))


def settings_of(var_dir: Path, **env: str) -> str:
    """DEBUG, SECRET_KEY's source and CACHE_URL as the settings see them in a process whose
    environment holds only `env` (and CSBOT_VAR_DIR)."""
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SECRET_KEY == 'insecure-dev-only-key', s.CACHE_URL)"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "csbot.settings",
            "CELERY_BROKER_URL": "memory://",
            "CSBOT_VAR_DIR": str(var_dir),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_settings_read_the_file_for_what_the_environment_lacks(tmp_path: Path) -> None:
    local_env_write(tmp_path, {"DJANGO_DEBUG": "1", "CACHE_URL": "locmem://"})
    # DEBUG from the file, with the file's generated key (not the insecure development one).
    assert settings_of(tmp_path) == "True False locmem://"
    # Set in the environment: the environment's value.
    assert settings_of(tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY="k") == "False False locmem://"
