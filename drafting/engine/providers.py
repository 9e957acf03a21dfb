"""The provider contract: `complete(request) -> Completion`, and its OpenAI-compatible provider.

One provider covers the local vLLM server and the paid APIs: they speak the same API, so the
official `openai` SDK with a `base_url` talks to all of them. SDK-level retries are off — what
happens after a failure (retry later, next tier, give up) is the caller's decision, made from
the typed error below.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import openai
from django.views.decorators.debug import sensitive_variables
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from drafting.models import ModelEndpoint


@dataclass(frozen=True)
class CompletionRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.3
    logprobs: bool = True


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: int
    model: str
    finish_reason: str
    token_logprobs: list[float] = field(default_factory=list)
    # The server's own compute time for this request (vLLM per-request metrics), if it says.
    server_ms: int | None = None
    # Requests this process had in flight to the same server when this one started (itself
    # included): the share of a batching server's time this request may be charged.
    concurrency: int = 1

    @property
    def mean_token_prob(self) -> float | None:
        """exp(mean logprob): a cheap confidence signal when the server returns logprobs."""
        if not self.token_logprobs:
            return None
        return math.exp(sum(self.token_logprobs) / len(self.token_logprobs))


class ProviderError(Exception):
    """A failed call, classified so the caller can decide what to do next."""

    # Subclasses set these. `transient`: worth retrying later or on another tier.
    kind = "unavailable"
    transient = True

    def __init__(self, message: str, *, latency_ms: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.latency_ms = latency_ms
        self.retry_after = retry_after


class RateLimited(ProviderError):
    kind = "rate_limited"


class ProviderTimeout(ProviderError):
    kind = "timeout"


class Unavailable(ProviderError):
    kind = "unavailable"


class ContextTooLong(ProviderError):
    kind = "context_too_long"
    transient = False


class PermanentError(ProviderError):
    """Auth failures and bad requests: retrying the same call cannot help."""

    kind = "permanent"
    transient = False


class EmptyCompletion(ProviderError):
    kind = "empty"


class SpendCapped(ProviderError):
    """Not a call: the endpoint's daily or monthly spend cap is reached."""

    kind = "spend_capped"
    transient = False


class CircuitOpen(ProviderError):
    """Not a call: the tier was skipped because its circuit breaker is cooling down."""

    kind = "circuit_open"


class Provider(Protocol):
    """What the cascade, the admin's endpoint check and readiness ask of a model server. Every
    endpoint speaks the OpenAI API today (paid APIs and vLLM alike); another wire protocol
    would be one more class behind this, chosen by `provider_for`."""

    def complete(
        self, request: CompletionRequest, *, on_text: Callable[[str], None] | None = None
    ) -> Completion:
        """One chat completion; raises a ProviderError subclass on failure. With `on_text`, the
        answer is streamed and `on_text` gets the text so far as it grows (the completion
        returned is the same as without it)."""
        ...

    def model_names(self) -> list[str]:
        """The models the server offers (a free call), for connection checks."""
        ...


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: rare from LLM APIs; the caller's backoff applies.


_CONTEXT_MARKERS = (
    "context length",
    "maximum context",
    "context_length_exceeded",
    "too many tokens",
)


class OpenAICompatibleProvider:
    @sensitive_variables("api_key")
    def __init__(self, *, base_url: str, model: str, api_key: str, timeout: float):
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.client = _client(base_url=base_url, api_key=api_key)

    def model_names(self) -> list[str]:
        """The models the server offers (GET /models), for connection checks."""
        try:
            return [model.id for model in self.client.models.list(timeout=self.timeout)]
        except openai.APIError as exc:
            raise _classify(exc, latency_ms=0, secret=self.client.api_key) from exc

    def complete(
        self, request: CompletionRequest, *, on_text: Callable[[str], None] | None = None
    ) -> Completion:
        with _in_flight(self.base_url) as concurrency:
            if on_text is None:
                return self._complete(request, concurrency=concurrency)
            return self._stream(request, on_text=on_text, concurrency=concurrency)

    def _complete(self, request: CompletionRequest, *, concurrency: int) -> Completion:
        started = time.monotonic()
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=request.messages,  # type: ignore[arg-type]
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                logprobs=request.logprobs,
                timeout=self.timeout,
            )
        except openai.APIError as exc:
            raise _classify(
                exc, latency_ms=_elapsed_ms(started), secret=self.client.api_key
            ) from exc
        except json.JSONDecodeError as exc:
            # The SDK parses the body after the status check: a 200 with a broken body lands
            # here, not in APIError. The server is misbehaving: transient, try elsewhere.
            raise Unavailable(
                f"Malformed JSON in the response: {exc}", latency_ms=_elapsed_ms(started)
            ) from exc
        return self._completion(response, started=started, concurrency=concurrency)

    def _completion(
        self, response: ChatCompletion, *, started: float, concurrency: int
    ) -> Completion:
        latency_ms = _elapsed_ms(started)
        if not response.choices:
            raise EmptyCompletion("The response had no choices.", latency_ms=latency_ms)
        choice = response.choices[0]
        text = (choice.message.content or "").strip()
        if not text:
            raise EmptyCompletion("The model returned an empty text.", latency_ms=latency_ms)
        logprobs = [t.logprob for t in (choice.logprobs.content or [])] if choice.logprobs else []
        usage = response.usage
        return Completion(
            text=text,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            model=response.model or self.model,
            finish_reason=choice.finish_reason or "",
            token_logprobs=logprobs,
            server_ms=_server_ms(response.model_extra),
            concurrency=concurrency,
        )

    def _stream(
        self, request: CompletionRequest, *, on_text: Callable[[str], None], concurrency: int
    ) -> Completion:
        """The same completion, streamed: `on_text` gets the text so far after each chunk.

        Steps: ask with `stream=True` and usage in the last chunk (tokens are counted as
        without streaming); a server that answers a plain JSON completion instead is read as
        one; otherwise gather text, logprobs, finish reason, model and usage from the chunks,
        within `timeout` in all (the SDK's timeout applies to each read, and a server that
        keeps sending would never trip it). Errors are classified as `_complete`'s: HTTP
        errors are raised before the first chunk, a broken connection or an error event
        mid-stream is the server's outage."""
        started = time.monotonic()
        secret = self.client.api_key
        try:
            # Typed messages are dicts here: no overload of the SDK's signature matches them.
            stream: Stream[ChatCompletionChunk] = self.client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                logprobs=request.logprobs,
                timeout=self.timeout,
                stream=True,
                stream_options={"include_usage": True},
            )
        except openai.APIError as exc:
            raise _classify(exc, latency_ms=_elapsed_ms(started), secret=secret) from exc
        try:
            if "text/event-stream" not in stream.response.headers.get("content-type", ""):
                # The server ignored `stream`: its answer is a whole completion.
                body = json.loads(stream.response.read())
                return self._completion(
                    ChatCompletion.construct(**body), started=started, concurrency=concurrency
                )
            parts: list[str] = []
            logprobs: list[float] = []
            finish_reason, model, usage, server_ms = "", "", None, None
            chose = False
            for chunk in stream:
                if time.monotonic() - started > self.timeout:
                    raise ProviderTimeout(
                        f"The stream ran past the {self.timeout:g} s timeout.",
                        latency_ms=_elapsed_ms(started),
                    )
                model = chunk.model or model
                usage = chunk.usage or usage
                server_ms = _server_ms(chunk.model_extra) or server_ms
                if not chunk.choices:
                    continue  # the usage chunk
                chose = True
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                if choice.logprobs and choice.logprobs.content:
                    logprobs += [t.logprob for t in choice.logprobs.content]
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    on_text("".join(parts))
        except openai.APIError as exc:
            raise _classify(exc, latency_ms=_elapsed_ms(started), secret=secret) from exc
        except json.JSONDecodeError as exc:
            raise Unavailable(
                f"Malformed JSON in the response: {exc}", latency_ms=_elapsed_ms(started)
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"The stream stalled: {exc}", latency_ms=_elapsed_ms(started)
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"The stream broke off: {exc}", latency_ms=_elapsed_ms(started)
            ) from exc
        finally:
            stream.close()
        latency_ms = _elapsed_ms(started)
        if not chose:
            raise EmptyCompletion("The response had no choices.", latency_ms=latency_ms)
        text = "".join(parts).strip()
        if not text:
            raise EmptyCompletion("The model returned an empty text.", latency_ms=latency_ms)
        return Completion(
            text=text,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            model=model or self.model,
            finish_reason=finish_reason,
            token_logprobs=logprobs,
            server_ms=server_ms,
            concurrency=concurrency,
        )


# One SDK client (and so one HTTP connection pool) per server and key, shared by the threads
# of a process: building one costs ~40 ms (TLS context and all), more than the rest of a
# draft's orchestration. Timeouts are passed per request.
_clients: dict[tuple[str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


@sensitive_variables("api_key", "key")
def _client(*, base_url: str, api_key: str) -> openai.OpenAI:
    key = (base_url, api_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = openai.OpenAI(
                base_url=base_url, api_key=api_key, max_retries=0
            )
        return client


_in_flight_counts: Counter[str] = Counter()
_in_flight_lock = threading.Lock()


@contextmanager
def _in_flight(server: str) -> Iterator[int]:
    with _in_flight_lock:
        _in_flight_counts[server] += 1
        concurrency = _in_flight_counts[server]
    try:
        yield concurrency
    finally:
        with _in_flight_lock:
            _in_flight_counts[server] -= 1


def _server_ms(extra: dict[str, Any] | None) -> int | None:
    """Compute time from vLLM's per-request `metrics` (queue time excluded), when present."""
    metrics = (extra or {}).get("metrics")
    if not isinstance(metrics, dict):
        return None
    try:
        busy = float(metrics["time_to_first_token_ms"]) - float(metrics.get("queue_time_ms") or 0)
        busy += float(metrics["generation_time_ms"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0, round(busy))


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


@sensitive_variables("secret")
def _classify(exc: openai.APIError, *, latency_ms: int, secret: str) -> ProviderError:
    # Some gateways repeat the key they refused in the error, and this text is stored
    # (DraftAttempt.error_message) and logged: never the key.
    text = str(exc)
    message = (text.replace(secret, "[REDACTED]") if len(secret) >= 8 else text)[:500]
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(message, latency_ms=latency_ms)
    if isinstance(exc, openai.APIConnectionError):
        return Unavailable(message, latency_ms=latency_ms)
    if isinstance(exc, openai.RateLimitError):
        return RateLimited(message, latency_ms=latency_ms, retry_after=_retry_after(exc.response))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return Unavailable(
                message, latency_ms=latency_ms, retry_after=_retry_after(exc.response)
            )
        if exc.status_code in (400, 413, 422) and any(
            m in message.lower() for m in _CONTEXT_MARKERS
        ):
            return ContextTooLong(message, latency_ms=latency_ms)
        if exc.status_code in (408, 409):
            return ProviderTimeout(message, latency_ms=latency_ms)
        return PermanentError(message, latency_ms=latency_ms)
    # A response that is not what the API promises (malformed JSON and the like): the server
    # is misbehaving, which is a transient condition from the caller's point of view.
    return Unavailable(message, latency_ms=latency_ms)


@sensitive_variables("api_key")
def provider_for(endpoint: ModelEndpoint, *, timeout: float | None = None) -> Provider:
    """The provider for an endpoint. The API key is read from the environment at call time.
    `timeout` (seconds) tightens the endpoint's own timeout, e.g. to a draft's deadline."""
    api_key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    if endpoint.api_key_env and not api_key:
        raise PermanentError(f"The environment variable {endpoint.api_key_env} is not set.")
    try:
        base_url = endpoint.resolved_base_url()
    except ValueError as exc:
        raise PermanentError(str(exc)) from exc
    return OpenAICompatibleProvider(
        base_url=base_url,
        model=endpoint.model_name,
        # vLLM accepts any key when started without --api-key; the SDK insists on one.
        api_key=api_key or "not-needed",
        timeout=min(float(endpoint.timeout_seconds), timeout or float("inf")),
    )
