"""Deployment files: the dependency lock, the Dockerfile, compose.yaml and the operator docs.

No Docker engine runs here: the compose file is checked by Docker Compose's own `config`
(scripts/compose.sh installs it; skipped where absent) and by its structure, the image by its
Dockerfile's text, and the compose environment by booting csbot's settings with it.
"""

# ruff: noqa: S603  (subprocess argv: the compose binary found here and fixed arguments)
from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from django.utils import timezone
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
LB_OVERRIDE = ROOT / "deploy" / "compose.vllm-lb.yaml"
APP_SERVICES = ("web", "worker", "beat", "migrate")
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY", re.IGNORECASE)


# --- requirements.lock ------------------------------------------------------------------------


def lock_pins() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) for every requirement of the lock file."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line or line[0] in "# -":
            continue
        spec, *options = line.split("--hash=")
        name, version = spec.strip().split("==")
        pins[canonicalize_name(name)] = (Version(version), [o.strip() for o in options])
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def test_lock_pins_every_project_dependency_within_its_range():
    """Fails when pyproject.toml gained or changed a dependency: run scripts/lock.sh."""
    pins = lock_pins()
    missing = [str(r) for r in project_requirements() if canonicalize_name(r.name) not in pins]
    assert not missing, f"not in requirements.lock (run scripts/lock.sh): {missing}"
    outside = [
        f"{r} (locked {pins[canonicalize_name(r.name)][0]})"
        for r in project_requirements()
        if not r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True)
    ]
    assert not outside, f"locked outside pyproject.toml's range (run scripts/lock.sh): {outside}"


def test_lock_pins_extras_of_project_dependencies():
    # celery[redis] needs the redis client, psycopg[binary] its binary build.
    pins = lock_pins()
    assert {"redis", "psycopg-binary"} <= set(pins)


def test_lock_has_a_sha256_hash_for_every_pin():
    pins = lock_pins()
    assert len(pins) > 50
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed
    for _, hashes in pins.values():
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes)


def test_lock_takes_torch_cpu_build_without_cuda_packages():
    pins = lock_pins()
    torch_version, torch_hashes = pins["torch"]
    assert torch_version.local == "cpu"
    assert torch_version.public == "2.13.0"
    # One file: the cp311 manylinux x86_64 CPU wheel the image installs.
    assert len(torch_hashes) == 1
    cuda = [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert not cuda


def test_lock_header_names_the_script_that_writes_it():
    assert "scripts/lock.sh" in LOCK.read_text().splitlines()[1]
    assert os.access(ROOT / "scripts" / "lock.sh", os.X_OK)


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), grouped by stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), " ".join(args.split())))
    return stages


def test_dockerfile_builds_the_venv_in_one_stage_and_copies_it_into_the_runtime():
    build, runtime = dockerfile_stages()
    assert build[0][1].endswith(" AS build")
    assert runtime[0][1].endswith(" AS runtime")
    assert ("COPY", "--from=build /venv /venv") in runtime
    # No pip run in the runtime stage: what runs is exactly what the build stage installed.
    assert not any(k == "RUN" and "pip install" in a for k, a in runtime)


def test_dockerfile_installs_only_the_hashed_lock():
    build, _ = dockerfile_stages()
    installs = [a for k, a in build if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    for flag in ("--require-hashes", "--no-deps", "-r /tmp/requirements.lock"):
        assert flag in installs[0]
    assert ("COPY", "requirements.lock /tmp/requirements.lock") in build


def test_dockerfile_runs_as_a_non_root_user():
    _, runtime = dockerfile_stages()
    users = [a for k, a in runtime if k == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Nothing after USER needs root (a later RUN would run as the app user anyway).
    last_user = max(i for i, (k, _) in enumerate(runtime) if k == "USER")
    assert not [a for k, a in runtime[last_user:] if k == "RUN"]


def test_dockerfile_keeps_secrets_out_of_the_image_config():
    for stage in dockerfile_stages():
        for keyword, args in stage:
            if keyword in ("ENV", "ARG", "LABEL"):
                assert not SECRET_WORDS.search(args), f"{keyword} {args}"
    # The build-time key exists only inside the collectstatic RUN.
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("DJANGO_SECRET_KEY=") == 1
    assert "DJANGO_SECRET_KEY=build-only" in text


def test_dockerfile_checks_the_web_health_and_defaults_to_gunicorn():
    _, runtime = dockerfile_stages()
    checks = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert len(checks) == 1 and "healthcheck.py" in checks[0] and '"web"' in checks[0]
    cmd = [a for k, a in runtime if k == "CMD"][-1]
    assert cmd.startswith('["gunicorn", "-c", "python:csbot.observability.gunicorn",')
    assert '"csbot.wsgi:application"' in cmd


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_only_files_the_build_context_has():
    ignored = {p for p in dockerignore_patterns() if not p.startswith("!")}
    for stage in dockerfile_stages():
        for keyword, args in stage:
            if keyword != "COPY" or args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/").split("/")[0] not in ignored, source


def test_dockerignore_keeps_local_secrets_and_state_out_of_the_context():
    patterns = set(dockerignore_patterns())
    assert {".git", ".env", ".venv", "var"} <= patterns


# --- compose.yaml -------------------------------------------------------------------------------


def compose_raw() -> dict[str, Any]:
    # PyYAML resolves the anchors and `<<` merge keys as Compose does.
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_command() -> list[str] | None:
    """Docker Compose v2: the docker CLI plugin, or the binary scripts/compose.sh installs."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    home = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    plugin = home / "cli-plugins" / "docker-compose"
    return [str(plugin)] if plugin.exists() else None


def run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (scripts/compose.sh install)")
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home())}
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "--file", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        check=False,
        cwd=ROOT,
    )


def test_docker_compose_config_accepts_the_file_with_the_example_env():
    result = run_compose("--env-file", str(ENV_EXAMPLE), "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_refuses_to_start_without_a_secret_key(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(
        "\n".join(
            line
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("DJANGO_SECRET_KEY=")
        )
    )
    result = run_compose("--env-file", str(env_file), "config", "--quiet")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.slow
def test_compose_environment_boots_csbot_settings_and_passes_deploy_checks(tmp_path):
    """The web service's resolved environment, as compose hands it over, is accepted by
    csbot.settings, and Django's deployment checklist finds nothing to fix."""
    import json

    key = secrets.token_urlsafe(50)
    env_file = tmp_path / "env"
    env_file.write_text(
        re.sub(
            r"^DJANGO_SECRET_KEY=.*$",
            f"DJANGO_SECRET_KEY={key}",
            ENV_EXAMPLE.read_text(),
            flags=re.M,
        )
    )
    result = run_compose("--env-file", str(env_file), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    web_env = json.loads(result.stdout)["services"]["web"]["environment"]
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(Path.home()),
            "CSBOT_VAR_DIR": str(tmp_path / "var"),
            **{name: str(value) for name, value in web_env.items()},
        },
    )
    assert check.returncode == 0, check.stderr
    output = check.stdout + check.stderr
    # Security and csbot's own deploy checks (drf-spectacular's schema hints are not ours).
    assert not re.findall(r"\((?:security|csbot)\.\w+\)", output), output
    assert web_env["LOCAL_LLM_URL"] == "http://vllm:8000/v1"
    assert web_env["DATABASE_URL"].startswith("postgres://")
    assert web_env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")


def test_load_balanced_vllm_override_sends_every_app_service_to_the_balancer():
    """deploy/compose.vllm-lb.yaml: two vLLM servers on their own GPUs behind nginx, and
    LOCAL_LLM_URL of web, worker, beat and migrate pointing at it."""
    import json

    result = run_compose(
        "--env-file", str(ENV_EXAMPLE), "--file", str(LB_OVERRIDE), "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["LOCAL_LLM_URL"] == "http://vllm-lb:8000/v1"
        # The override adds to the environment, it does not replace it.
        assert services[name]["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    gpus = [
        services[name]["deploy"]["resources"]["reservations"]["devices"]
        for name in ("vllm", "vllm-2")
    ]
    assert [devices[0]["device_ids"] for devices in gpus] == [["0"], ["1"]]
    assert all(devices[0]["driver"] == "nvidia" and len(devices) == 1 for devices in gpus)
    for name in ("vllm", "vllm-2", "vllm-lb"):
        assert services[name]["healthcheck"]["test"], name
    upstream = (ROOT / "deploy" / "nginx" / "vllm-lb.conf").read_text()
    assert "server vllm:8000" in upstream and "server vllm-2:8000" in upstream


def test_compose_runs_web_worker_beat_and_migrate_from_one_image():
    services = compose_raw()["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert images == {"${CSBOT_IMAGE:-csbot:latest}"}
    commands = {name: " ".join(services[name]["command"]) for name in APP_SERVICES}
    # The gunicorn config module makes its processes share request metrics.
    assert commands["web"].startswith(
        "gunicorn -c python:csbot.observability.gunicorn csbot.wsgi:application"
    )
    assert commands["worker"].startswith("celery -A csbot worker")
    assert commands["beat"].startswith("celery -A csbot beat")
    assert "manage.py migrate" in commands["migrate"]
    assert "accounting_defaults" in commands["migrate"]


def test_compose_beat_uses_the_database_scheduler_that_settings_configure(settings):
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    # Not overridden on the command line (`-S` / `--scheduler`).
    assert "-S" not in compose_raw()["services"]["beat"]["command"]
    assert not any(
        a.startswith("--scheduler") for a in compose_raw()["services"]["beat"]["command"]
    )


def test_every_long_running_service_has_a_healthcheck():
    for name, service in compose_raw()["services"].items():
        if service.get("restart") == "no":
            continue  # one-shot (migrate): compose waits for it to complete instead
        check = service.get("healthcheck", {})
        assert not check.get("disable"), name
        assert check.get("test"), name
    services = compose_raw()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/health" in " ".join(services["vllm"]["healthcheck"]["test"])
    for name in ("web", "worker", "beat"):
        assert services[name]["healthcheck"]["test"][-1] == name


def test_app_services_wait_for_healthy_database_and_broker_and_for_migrations():
    services = compose_raw()["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_vllm_service_reserves_an_nvidia_gpu_and_takes_its_model_from_env():
    vllm = compose_raw()["services"]["vllm"]
    assert "vllm/vllm-openai" in vllm["image"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    command = vllm["command"]
    assert command[0].startswith("${VLLM_MODEL:-")
    for flag, variable in (
        ("--served-model-name", "VLLM_SERVED_MODEL_NAME"),
        ("--gpu-memory-utilization", "VLLM_GPU_MEMORY_UTILIZATION"),
        ("--max-model-len", "VLLM_MAX_MODEL_LEN"),
        ("--tensor-parallel-size", "VLLM_TENSOR_PARALLEL_SIZE"),
    ):
        assert any(a.startswith(f"{flag}=${{{variable}:-") for a in command), flag
    # csbot charges local attempts by vLLM's own per-request GPU time.
    assert "--enable-per-request-metrics" in command
    assert any(v.endswith(":/root/.cache/huggingface") for v in vllm["volumes"])


def test_app_services_reach_vllm_postgres_and_redis_by_service_name():
    env = compose_raw()["services"]["web"]["environment"]
    assert env["LOCAL_LLM_URL"] == "${LOCAL_LLM_URL:-http://vllm:8000/v1}"
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    # Rate-limit counters shared by every web process, in a Redis database of their own.
    assert env["CACHE_URL"] == "redis://redis:6379/2"
    assert env["DJANGO_DEBUG"] == "0"


def test_named_volumes_are_declared_for_every_stateful_service():
    data = compose_raw()
    declared = set(data["volumes"])
    used = {
        volume.split(":")[0]
        for service in data["services"].values()
        for volume in service.get("volumes", [])
    }
    assert used <= declared
    services = data["services"]
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis:/data" in services["redis"]["volumes"]
    assert "media:/app/var/media" in services["web"]["volumes"]
    # gunicorn's processes share request metrics through files: in memory, empty at start.
    metrics_dir = Path(services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"])
    assert any(metrics_dir.is_relative_to(mount) for mount in services["web"]["tmpfs"])


def test_compose_hard_codes_no_secret():
    """Every secret-looking variable is taken from the environment, without a default, and
    the secret key and database password are required."""
    raw = COMPOSE.read_text()
    assert "${DJANGO_SECRET_KEY:?" in raw
    assert "${POSTGRES_PASSWORD:?" in raw
    for name, service in compose_raw()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if not SECRET_WORDS.search(key):
                continue
            match = re.fullmatch(r"\$\{(\w+)(:[-?])?([^}]*)\}", str(value))
            assert match, f"{name}.{key} is hard-coded"
            if match.group(2) == ":-":
                assert match.group(3) == "", f"{name}.{key} has a default"


def test_env_example_documents_every_variable_compose_reads():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text() + LB_OVERRIDE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used - example == set()


# --- deploy/healthcheck.py ----------------------------------------------------------------------


def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "csbot_healthcheck", ROOT / "deploy" / "healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_sends_a_host_django_allows():
    allowed_host = healthcheck_module().allowed_host
    assert allowed_host("csbot.example.com,localhost") == "csbot.example.com"
    assert allowed_host(" , .example.com") == "healthcheck.example.com"
    assert allowed_host("*") == "localhost"
    assert allowed_host("") == "localhost"


@pytest.mark.django_db
def test_beat_check_fails_once_the_sweeper_stops_being_scheduled():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    check = healthcheck_module()
    assert check.beat_problem() is not None  # beat never ran
    every, _ = IntervalSchedule.objects.get_or_create(every=30, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name=check.SWEEP_TASK,
        task="drafting.tasks.drafts_sweep",
        interval=every,
        last_run_at=timezone.now() - timedelta(seconds=30),
    )
    assert check.beat_problem() is None
    task.last_run_at = timezone.now() - timedelta(hours=1)
    task.save()
    assert "has not run" in check.beat_problem()


def test_healthcheck_exits_non_zero_when_web_does_not_answer():
    # Port 9 (discard) on loopback: nothing listens there.
    assert healthcheck_module().check_web("http://127.0.0.1:9/healthz") is not None


# --- operator docs ------------------------------------------------------------------------------


def test_configuration_doc_lists_every_variable_the_settings_read():
    settings_source = (ROOT / "csbot" / "settings.py").read_text()
    names = set(re.findall(r'\b_?env_\w+\(\s*"([A-Z][A-Z0-9_]+)"', settings_source))
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "CSBOT_LOGIN_RATE"} <= names
    documented = set(
        re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text())
    )
    assert names - documented == set(), "add these to docs/configuration.md"


def test_docs_links_resolve_and_the_index_lists_every_page():
    docs = ROOT / "docs"
    pages = sorted(p.name for p in docs.glob("*.md") if p.name != "README.md")
    index = (docs / "README.md").read_text()
    assert [p for p in pages if f"({p})" not in index] == []
    for page in [*docs.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    readme = (ROOT / "README.md").read_text()
    assert "(docs/README.md)" in readme and "(docs/deployment.md)" in readme
