"""A small OpenAI-compatible HTTP server for tests: serves recorded responses, or faults.

Real HTTP on loopback, so the official SDK, its timeouts and its error mapping are exercised
exactly as against a paid API; only the far end is scripted.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def chat_completion(
    text: str,
    *,
    prompt_tokens: int = 42,
    completion_tokens: int = 17,
    model: str = "stub-model",
    logprob: float = -0.1,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """The body of a successful /v1/chat/completions response, as OpenAI returns it."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {
                    "content": [
                        {"token": word, "logprob": logprob, "bytes": None, "top_logprobs": []}
                        for word in text.split()
                    ]
                },
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A `chat_completion` body as the chunks a streaming server sends: one per word (its
    spaces before it, its logprob), the finish reason on the last, then the usage chunk that
    `stream_options.include_usage` asks for."""
    choice = body["choices"][0]
    words = re.findall(r"\s*\S+", choice["message"]["content"])
    logprobs = choice["logprobs"]["content"] if choice.get("logprobs") else []
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    chunks = []
    for i, word in enumerate(words):
        chunk_choice: dict[str, Any] = {
            "index": 0,
            "delta": {"role": "assistant", "content": word} if i == 0 else {"content": word},
            "logprobs": {"content": logprobs[i : i + 1]} if logprobs else None,
            "finish_reason": choice["finish_reason"] if i == len(words) - 1 else None,
        }
        chunks.append(base | {"choices": [chunk_choice], "usage": None})
    chunks.append(base | {"choices": [], "usage": body["usage"]})
    return chunks


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as is (malformed JSON and the like)
    wait: threading.Event | None = None  # block until set (a slow or hanging server)
    # Sent as server-sent events (`chat_completion_chunks(body)`, or `events` as given), one
    # every `chunk_delay` seconds; `cut_after`: the connection drops after that many events.
    stream: bool = False
    events: list[Any] | None = None
    chunk_delay: float = 0.0
    cut_after: int | None = None


@dataclass
class StubServer:
    base_url: str
    requests: list[dict[str, Any]]
    script: list[Reply | Callable[[dict[str, Any]], Reply]]


@contextmanager
def openai_stub(*replies: Reply | Callable[[dict[str, Any]], Reply]) -> Iterator[StubServer]:
    """Serve `replies` in order to POST /v1/chat/completions (the last one repeats)."""
    requests: list[dict[str, Any]] = []
    script = list(replies) or [Reply(body=chat_completion("Hello from the stub."))]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

        def do_GET(self) -> None:
            if not self.path.endswith("/models"):
                self.send_error(404)
                return
            data = json.dumps(
                {
                    "object": "list",
                    "data": [
                        {"id": "stub-model", "object": "model", "created": 0, "owned_by": "stub"}
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                requests.append({"path": self.path, "json": payload, "headers": dict(self.headers)})
                step = script.pop(0) if len(script) > 1 else script[0]
            reply = step(payload) if callable(step) else step
            if reply.wait is not None:
                reply.wait.wait(timeout=30)
            if reply.stream:
                self._stream(reply)
                return
            data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def _stream(self, reply: Reply) -> None:
            """Server-sent events in a chunked HTTP/1.1 body, as vLLM and the paid APIs send
            them: a cut leaves the body unterminated, which the client sees as a broken
            stream (not as its end)."""
            events = (
                reply.events if reply.events is not None else chat_completion_chunks(reply.body)
            )
            self.protocol_version = "HTTP/1.1"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for i, event in enumerate([*events, "[DONE]"]):
                    if reply.cut_after is not None and i >= reply.cut_after:
                        return
                    data = event if isinstance(event, str) else json.dumps(event)
                    frame = f"data: {data}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                    self.wfile.flush()
                    if reply.chunk_delay:
                        time.sleep(reply.chunk_delay)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StubServer(
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
            requests=requests,
            script=script,
        )
    finally:
        server.shutdown()
        server.server_close()


class TcpProxy:
    """Forwards a loopback port to a real server; `stop()` makes it look down (connection
    refused), `start()` brings it back on the same port. Stands in for "vLLM stopped"."""

    def __init__(self, target_host: str, target_port: int):
        import socket

        self._socket_module = socket
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: Any = None
        self._connections: list[Any] = []
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        socket = self._socket_module
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in self._connections:
            with contextlib.suppress(OSError):
                # shutdown() sends the FIN at once and wakes the pipe threads blocked in
                # recv(); a bare close() from another thread does neither.
                conn.shutdown(self._socket_module.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        self._connections.clear()

    def _accept(self, listener: Any) -> None:
        socket = self._socket_module
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
