"""The OpenAI-compatible provider, streamed: the same Completion and the same typed errors as
without streaming, the text so far handed to a callback as it grows (recorded HTTP, real SSE)."""

from __future__ import annotations

import itertools

import pytest

from drafting.engine.providers import (
    Completion,
    CompletionRequest,
    ContextTooLong,
    EmptyCompletion,
    OpenAICompatibleProvider,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Unavailable,
)
from tests.http_stub import Reply, chat_completion, chat_completion_chunks, openai_stub

TEXT = "Thanks for writing! Your refund left today and arrives within 3-5 days."
REQUEST = CompletionRequest(messages=[{"role": "user", "content": "Refund?"}], max_tokens=64)


def _provider(base_url: str, *, timeout: float = 5) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url=base_url, model="stub-model", api_key="not-needed", timeout=timeout
    )


def _streamed(reply: Reply, *, timeout: float = 5) -> tuple[Completion, list[str]]:
    seen: list[str] = []
    with openai_stub(reply) as stub:
        completion = _provider(stub.base_url, timeout=timeout).complete(
            REQUEST, on_text=seen.append
        )
    return completion, seen


def _stream_error(reply: Reply, *, timeout: float = 5) -> ProviderError:
    with openai_stub(reply) as stub, pytest.raises(ProviderError) as caught:
        _provider(stub.base_url, timeout=timeout).complete(REQUEST, on_text=lambda _t: None)
    return caught.value


def test_a_streamed_completion_is_the_same_completion_and_its_text_grows_chunk_by_chunk() -> None:
    body = chat_completion(TEXT, prompt_tokens=120, completion_tokens=19, logprob=-0.2)
    with openai_stub(Reply(body=body)) as stub:
        plain = _provider(stub.base_url).complete(REQUEST)
    streamed, seen = _streamed(Reply(body=body, stream=True))

    assert (streamed.text, streamed.tokens_in, streamed.tokens_out) == (TEXT, 120, 19)
    assert streamed.model == plain.model == "stub-model"
    assert streamed.finish_reason == plain.finish_reason == "stop"
    assert streamed.token_logprobs == plain.token_logprobs == [-0.2] * len(TEXT.split())
    assert streamed.mean_token_prob == plain.mean_token_prob
    # One call per chunk, each a longer prefix of the final text.
    assert len(seen) == len(TEXT.split())
    assert seen[0] == "Thanks" and seen[-1] == TEXT
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))


def test_the_stream_request_asks_for_usage_so_tokens_are_still_counted() -> None:
    with openai_stub(Reply(body=chat_completion(TEXT), stream=True)) as stub:
        _provider(stub.base_url).complete(REQUEST, on_text=lambda _t: None)
    sent = stub.requests[0]["json"]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["logprobs"] is True


def test_a_server_that_ignores_stream_and_answers_json_gives_the_same_completion() -> None:
    completion, seen = _streamed(Reply(body=chat_completion(TEXT, completion_tokens=19)))
    assert completion.text == TEXT
    assert completion.tokens_out == 19
    assert seen == []  # nothing was streamed; the caller still gets the whole draft


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (
            Reply(
                status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
            ),
            RateLimited,
        ),
        (Reply(status=503, body={"error": {"message": "overloaded"}}), Unavailable),
        (
            Reply(status=400, body={"error": {"message": "maximum context length is 2048 tokens"}}),
            ContextTooLong,
        ),
    ],
)
def test_http_errors_are_classified_as_without_streaming(
    reply: Reply, kind: type[ProviderError]
) -> None:
    error = _stream_error(reply)
    assert type(error) is kind
    if kind is RateLimited:
        assert error.retry_after == 7


def test_a_stream_cut_off_midway_is_an_outage_not_a_short_draft() -> None:
    error = _stream_error(Reply(body=chat_completion(TEXT), stream=True, cut_after=3))
    assert isinstance(error, Unavailable)
    assert error.transient


def test_an_error_event_in_the_stream_is_an_outage() -> None:
    chunks = chat_completion_chunks(chat_completion(TEXT))
    events = [*chunks[:2], {"error": {"message": "engine died", "code": 500}}]
    error = _stream_error(Reply(stream=True, events=events))
    assert isinstance(error, Unavailable)
    assert "engine died" in str(error)


def test_malformed_json_in_the_stream_is_an_outage() -> None:
    chunks = chat_completion_chunks(chat_completion(TEXT))
    error = _stream_error(Reply(stream=True, events=[chunks[0], "{not json"]))
    assert isinstance(error, Unavailable)
    assert "Malformed JSON" in str(error)


def test_a_stream_that_keeps_sending_past_the_timeout_times_out() -> None:
    # Each chunk comes well within the timeout, the whole answer does not.
    error = _stream_error(
        Reply(body=chat_completion(TEXT), stream=True, chunk_delay=0.15), timeout=0.5
    )
    assert isinstance(error, ProviderTimeout)
    assert 500 <= error.latency_ms < 2000


def test_a_stream_with_only_whitespace_is_an_empty_completion() -> None:
    error = _stream_error(Reply(body=chat_completion("   "), stream=True))
    assert isinstance(error, EmptyCompletion)
