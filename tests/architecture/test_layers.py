"""The layers hold, and fail here when broken: the web process loads no machine-learning
library, the import contracts of pyproject.toml pass, drafting.localserver needs nothing but
the standard library, and no test module imports another test module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

# Trained models are the worker's business (drafting.learning); the web process only reads
# their rows. numpy and matplotlib (the dashboard's charts) are allowed.
HEAVY = ("sklearn", "torch", "scipy", "sentence_transformers", "transformers", "peft")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter of this virtualenv, in the repository, with this
    environment (the test settings' database, broker and cache)."""
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def last_json_line(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_web_process_loads_no_machine_learning_library() -> None:
    # What gunicorn imports (csbot.wsgi: Django set up, the app registry and admin loaded),
    # plus every view the URL configuration reaches.
    result = run_python(
        "import json, sys\n"
        "from csbot.wsgi import application\n"
        "import csbot.urls\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    loaded = last_json_line(result)
    assert isinstance(loaded, list)
    assert "csbot" in loaded and "drafting" in loaded and "accounting" in loaded
    assert sorted(set(HEAVY) & set(loaded)) == []


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(  # noqa: S603 - the virtualenv's own tool, no arguments
        [str(lint_imports)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def imported_modules(path: Path) -> Iterator[str]:
    """The absolute names of the modules `path` imports (relative imports resolved; for
    `from package import name`, both `package` and `package.name`)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        package = path.relative_to(ROOT).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_local_server_manager_needs_only_the_standard_library() -> None:
    # `python -m drafting.localserver` installs and runs vLLM before Django or the project's
    # virtualenv may be usable: nothing outside the standard library and itself.
    outside = {
        f"{path.name}: {module}"
        for path in sorted((ROOT / "drafting" / "localserver").glob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] not in sys.stdlib_module_names
        and not (module + ".").startswith("drafting.localserver.")
        and module != "drafting"  # `from drafting.localserver import x` names drafting too
    }
    assert outside == set()


def test_the_local_server_manager_runs_without_django() -> None:
    result = run_python(
        "import json, runpy, sys\n"
        "sys.argv = ['drafting.localserver', '--help']\n"
        "try:\n"
        "    runpy.run_module('drafting.localserver', run_name='__main__', alter_sys=True)\n"
        "    code = 0\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "django = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(json.dumps({'exit': code, 'django': django}))\n"
    )
    assert "usage:" in result.stdout
    assert last_json_line(result) == {"exit": 0, "django": []}


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    # Shared builders live in factories modules (tests/factories.py, tests/<app>/factories.py)
    # and tests/browser.py; fixtures in conftest.py, which pytest loads by itself.
    def a_test_module(module: str) -> bool:
        parts = module.split(".")
        return (ROOT.joinpath(*parts).with_suffix(".py")).is_file() and (
            parts[-1].startswith("test_") or parts[-1] == "conftest"
        )

    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("tests.") and a_test_module(module)
    }
    assert offenders == set()
