"""Tens-of-shot evaluation (drafting.evaluation.fewshot, manage.py fewshot_eval) and the embedding back ends
it runs on: MiniLM in process, and SmolLM2 on the local vLLM embedding server (real, started
once per session, like the generation server in conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from drafting import localserver
from drafting.engine import embeddings
from drafting.engine.embeddings import (
    CachedEmbedder,
    ConcatEmbedder,
    OpenAIEmbedder,
    embedder_named,
    vllm_embedder,
)
from drafting.evaluation import datasets, fewshot
from tests.http_stub import Reply, openai_stub

BANKING77 = datasets.shared_data_dir() / "banking77"
INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed")


def _subset(name: str, per_class: int | None = None) -> list[fewshot.Example]:
    rows = [row for row in fewshot.read_examples(BANKING77 / name) if row.label in INTENTS]
    if per_class is None:
        return rows
    # A slice of the test file keeps the embedding work small; every intent stays in.
    return [row for label in INTENTS for row in [r for r in rows if r.label == label][:per_class]]


@pytest.fixture
def banking_csvs(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    fewshot.write_examples(train, _subset("train.csv"))
    fewshot.write_examples(test, _subset("test.csv", per_class=20))
    return train, test


def _run(*args: str) -> tuple[dict[str, Any], str]:
    out, err = StringIO(), StringIO()
    call_command("fewshot_eval", *args, "--json", stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


def test_fewshot_eval_on_four_banking77_intents_is_far_above_chance(
    banking_csvs: tuple[Path, Path],
) -> None:
    train, test = banking_csvs
    result, progress = _run("--train", str(train), "--test", str(test), "--per-class", "10")
    # Chance is 0.25 on four balanced intents.
    assert result["accuracy"] >= 0.8
    assert result["macro_f1"] >= 0.8
    assert result["n_train"] == 40
    assert result["n_test"] == 80
    assert result["classes"] == 4
    assert result["train_counts"] == dict.fromkeys(INTENTS, 10)
    assert result["test_counts"] == dict.fromkeys(INTENTS, 20)
    assert result["embedding"] == "minilm:all-MiniLM-L6-v2:384"
    assert result["short_classes"] == {}
    assert result["C"] > 0
    assert set(result["seconds"]) == {"embed", "fit", "total"}
    assert "[fewshot] embedding 40 training and 80 test texts" in progress
    assert result["label_priors"] is True


def test_label_priors_can_be_left_out(banking_csvs: tuple[Path, Path]) -> None:
    train, test = banking_csvs
    args = ("--train", str(train), "--test", str(test), "--per-class", "3")
    without, _ = _run(*args, "--no-label-priors")
    assert without["label_priors"] is False
    assert without["cv_accuracy"] is not None  # scored on the 12 labelled rows only
    assert without["accuracy"] >= 0.6  # chance is 0.25


def test_sampling_is_seeded_nested_and_stable_per_class() -> None:
    rows = _subset("train.csv")
    first, _ = fewshot.sample_per_class(rows, 10, seed=7)
    again, _ = fewshot.sample_per_class(list(reversed(rows)), 10, seed=7)
    other, _ = fewshot.sample_per_class(rows, 10, seed=8)
    larger, _ = fewshot.sample_per_class(rows, 25, seed=7)
    assert sorted(e.text for e in first) == sorted(e.text for e in again)
    assert {e.text for e in first} != {e.text for e in other}
    assert {e.text for e in first} <= {e.text for e in larger}
    # Another class in the file doesn't change which rows the first four get.
    extra = rows + [fewshot.Example(text=f"extra {i}", label="zz_extra") for i in range(30)]
    with_extra, _ = fewshot.sample_per_class(extra, 10, seed=7)
    assert {e.text for e in with_extra if e.label != "zz_extra"} == {e.text for e in first}


def test_a_small_class_gives_all_its_rows_or_fails_when_strict(tmp_path: Path) -> None:
    rows = _subset("train.csv")
    few = [row for row in rows if row.label == "exchange_rate"][:3]
    train = tmp_path / "train.csv"
    fewshot.write_examples(train, [row for row in rows if row.label != "exchange_rate"] + few)
    test = tmp_path / "test.csv"
    fewshot.write_examples(test, _subset("test.csv", per_class=5))
    result, progress = _run("--train", str(train), "--test", str(test), "--per-class", "10")
    assert result["short_classes"] == {"exchange_rate": 3}
    assert result["train_counts"]["exchange_rate"] == 3
    assert result["n_train"] == 33
    assert "fewer than 10 training rows" in progress
    with pytest.raises(CommandError, match=r"exchange_rate \(3\)"):
        _run("--train", str(train), "--test", str(test), "--per-class", "10", "--strict")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence,label\nhello,a\n", "needs a header with `text` and `label`"),
        ("text,label\n", "no rows"),
        ("text,label\nhello,\n", "rows have text but no label"),
        ("text,label\nhello,a\nbye,a\n", "at least 2 are needed"),
    ],
)
def test_a_bad_csv_is_a_command_error(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    good = tmp_path / "good.csv"
    fewshot.write_examples(good, _subset("test.csv", per_class=2))
    with pytest.raises(CommandError, match=message):
        _run("--train", str(bad), "--test", str(good), "--per-class", "2")


def test_a_missing_file_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        _run("--train", str(tmp_path / "nope.csv"), "--test", "x.csv", "--per-class", "2")


def test_fomc_splits_read_from_the_spreadsheet_and_chatgpt_answers() -> None:
    split = fewshot.load_fomc(fewshot.FOMC_SEEDS[0])
    assert len(split.train) > 1500
    assert {e.label for e in split.train} == {"dovish", "hawkish", "neutral"}
    assert len(split.test) == len(split.chatgpt) == 476
    assert None not in split.chatgpt
    accuracy = np.mean([e.label == a for e, a in zip(split.test, split.chatgpt, strict=True)])
    # ChatGPT's zero-shot accuracy reported for this data set is ≈0.6; a wrong label mapping
    # would land far from it.
    assert 0.5 < accuracy < 0.8
    assert fewshot.chatgpt_label("DOVISH.\n\nThe sentence…") == "dovish"
    assert fewshot.chatgpt_label("I cannot tell") is None


def test_centring_uses_the_training_mean_and_renormalises() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(6, 5)).astype(np.float32) + 3
    test = rng.normal(size=(2, 5)).astype(np.float32) + 3
    X_train, X_test = fewshot.features(train, test, "center")
    assert np.allclose(np.linalg.norm(X_train, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(X_test, axis=1), 1, atol=1e-5)
    expected = (test[0] - train.mean(axis=0)) / np.linalg.norm(test[0] - train.mean(axis=0))
    assert np.allclose(X_test[0], expected, atol=1e-5)


# --- the vLLM embedding back end -----------------------------------------------------------------


def _embeddings_reply(payload: dict[str, Any]) -> Reply:
    texts = payload["input"]
    return Reply(
        body={
            "object": "list",
            "model": payload["model"],
            # Out of order on purpose: the client must sort by index.
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(len(texts[i])), 1.0, 0.0]}
                for i in reversed(range(len(texts)))
            ],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
    )


def test_openai_embedder_batches_keeps_order_and_names_its_dimension() -> None:
    with openai_stub(_embeddings_reply) as stub:
        inner = OpenAIEmbedder(base_url=stub.base_url, model="m", api_key="k", batch_size=2)
        cached = CachedEmbedder(inner, size=100)
        vectors = cached.embed(["a", "bbb", "cc", "dddd", "eeeee"])
        assert [r["json"]["input"] for r in stub.requests] == [
            ["a", "bbb"],
            ["cc", "dddd"],
            ["eeeee"],
        ]
        assert vectors.shape == (5, 3)
        lengths = np.array([1, 3, 2, 4, 5], dtype=np.float32)
        expected = np.column_stack([lengths, np.ones(5), np.zeros(5)])
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        assert np.allclose(vectors, expected, atol=1e-6)
        assert cached.name == "openai:m:3"
        cached.embed(["bbb", "cc"])  # cached: no new request
        assert len(stub.requests) == 3


def test_concat_embedder_joins_unit_parts_into_a_unit_row() -> None:
    with openai_stub(_embeddings_reply) as stub:
        one = OpenAIEmbedder(base_url=stub.base_url, model="one", api_key="k")
        two = OpenAIEmbedder(base_url=stub.base_url, model="two", api_key="k")
        joined = ConcatEmbedder([one, two])
        vectors = joined.embed(["hello", "hi"])
        assert vectors.shape == (2, 6)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
        assert joined.name == "openai:one:3+openai:two:3"


def test_embedder_named_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="Unknown embedder"):
        embedder_named("word2vec")


def test_vllm_embedder_follows_the_embedding_settings(settings: Any) -> None:
    settings.EMBEDDING_URL = "http://10.0.0.9:9000/v1"
    settings.EMBEDDING_MODEL = "bge-small"
    embedder = vllm_embedder()
    assert (embedder.base_url, embedder.model) == ("http://10.0.0.9:9000/v1", "bge-small")
    settings.EMBEDDING_URL = ""
    settings.EMBEDDING_MODEL = ""
    embedder = vllm_embedder()
    assert embedder.base_url == localserver.base_url_for(localserver.DEFAULT_EMBED_PORT)
    assert embedder.model == localserver.EMBED_MODEL_NAME


def test_the_product_embeds_with_the_vllm_back_end_when_configured(settings: Any) -> None:
    settings.EMBEDDING_BACKEND = "vllm"
    embeddings.embedder.cache_clear()
    try:
        with openai_stub(_embeddings_reply) as stub:
            settings.EMBEDDING_URL = stub.base_url
            product = embeddings.embedder()
            assert product is not None
            vectors = product.embed(["where is my card", "hi"])
            assert stub.requests[0]["json"]["model"] == localserver.EMBED_MODEL_NAME
            assert vectors.shape == (2, 3)
            assert product.name == f"openai:{localserver.EMBED_MODEL_NAME}:3"
    finally:
        embeddings.embedder.cache_clear()


@pytest.fixture(scope="session")
def vllm_embed_url() -> Iterator[str]:
    """The real embedding server (SmolLM2-135M as a pooling model), started once per session
    on its own port unless one is running; stopped again if this session started it."""
    from django.conf import settings

    if settings.EMBEDDING_URL:
        yield localserver.ensure_server(url=settings.EMBEDDING_URL, timeout=1200)
        return
    port = settings.LOCAL_EMBED_PORT
    running = localserver.probe(localserver.base_url_for(port)) is not None
    url = localserver.ensure_server(port=port, embed=True, timeout=1200)
    yield url
    if not running:
        localserver.stop_server(port)


@pytest.mark.vllm
def test_fewshot_eval_with_the_vllm_embedding_server(
    vllm_embed_url: str, banking_csvs: tuple[Path, Path]
) -> None:
    train, test = banking_csvs
    embedder_named.cache_clear()
    result, _ = _run(
        "--train", str(train), "--test", str(test), "--per-class", "10", "--embedding", "vllm"
    )
    assert result["embedding"] == f"openai:{localserver.EMBED_MODEL_NAME}:576"
    assert result["n_train"] == 40
    # SmolLM2 is no sentence encoder, but four intents are still far above chance (0.25).
    assert result["accuracy"] >= 0.6
    vectors = embedder_named("vllm").embed(["my card has not arrived", "my card never came"])
    assert vectors.shape == (2, 576)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
