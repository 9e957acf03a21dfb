"""The trainer of the local model's adapter (drafting.learning.distill) on the shipped
SmolLM2-135M: the loss is taken on the agent's reply only, long prompts lose their oldest
tokens, and a few steps on a tiny set lower the validation loss and leave a servable adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drafting.learning.distill import DistillError, Hyper, encode, merge_adapter, train_adapter
from drafting.localserver import is_installed
from drafting.localserver.config import model_dir

pytestmark = pytest.mark.skipif(
    not is_installed(), reason="the local model is installed by `manage.py local_llm install`"
)

SYSTEM = {"role": "system", "content": "You answer for Acme Bank's support team."}


def _transcript(question: str, answer: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir())


def test_the_loss_is_taken_on_the_agents_reply_only(tokenizer: Any) -> None:
    encoded = encode(tokenizer, _transcript("Where is my card?", "It ships today."), max_length=256)
    assert encoded is not None
    assert len(encoded.input_ids) == len(encoded.labels)
    answer = [token for token in encoded.labels if token != -100]
    # The reply and the template's end-of-turn: what the model must learn to say, and stop.
    assert tokenizer.decode(answer).strip() == "It ships today.<|im_end|>"
    prompt = tokenizer.decode(encoded.input_ids[: len(encoded.labels) - len(answer)])
    assert "Where is my card?" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_long_prompt_loses_its_oldest_tokens_and_keeps_the_reply(tokenizer: Any) -> None:
    question = "Please help. " * 200 + "What is the fee?"
    encoded = encode(tokenizer, _transcript(question, "The fee is $5."), max_length=64)
    assert encoded is not None
    assert len(encoded.input_ids) == 64
    answer = [token for token in encoded.labels if token != -100]
    assert tokenizer.decode(answer).strip() == "The fee is $5.<|im_end|>"
    assert "What is the fee?" in tokenizer.decode(encoded.input_ids)


def test_a_transcript_not_ending_with_the_agent_is_no_example(tokenizer: Any) -> None:
    assert encode(tokenizer, [SYSTEM, {"role": "user", "content": "Hi"}], max_length=64) is None
    assert encode(tokenizer, [{"role": "assistant", "content": "Hi"}], max_length=64) is None


def test_no_usable_example_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="no training example"):
        train_adapter(
            base_dir=model_dir(),
            train=[[SYSTEM, {"role": "user", "content": "Hi"}]],
            validation=[],
            out_dir=tmp_path,
        )


@pytest.mark.slow
def test_a_few_steps_lower_the_validation_loss_and_save_an_adapter(tmp_path: Path) -> None:
    replies = [
        _transcript(f"My card ending {n} was declined.", f"Card {n} is unblocked now. Acme Bank.")
        for n in range(10, 30)
    ]
    hyper = Hyper(
        max_steps=4, batch_size=4, learning_rate=1e-3, max_length=96, generate_validation=0
    )
    result = train_adapter(
        base_dir=model_dir(),
        train=replies[:16],
        validation=replies[16:],
        out_dir=tmp_path / "adapter",
        hyper=hyper,
    )
    assert (result.n_train, result.n_validation, result.steps) == (16, 4, 4)
    assert result.device in ("cpu", "cuda")
    assert result.seconds > 0 and result.trainable_parameters > 0
    assert result.validation["loss"] < result.validation["loss_before"]
    assert [point["step"] for point in result.loss_curve if "loss" in point] == [1, 2, 3, 4]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    # What vLLM's --lora-modules reads: the rank within the server's --max-lora-rank.
    assert config["peft_type"] == "LORA" and config["r"] == hyper.rank <= 16
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 0


@pytest.mark.slow
def test_a_merged_copy_answers_as_the_base_with_its_adapter_does(tmp_path: Path) -> None:
    """The merged folder computes what base + adapter compute (same logits), is not the base,
    and carries the base's tokenizer and chat template (vLLM serves it like the base)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32)
    # A random adapter (peft starts B at zero, which would merge to the base itself).
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(base, config).save_pretrained(str(tmp_path / "adapter"))

    out = merge_adapter(
        base_dir=model_dir(), adapter_dir=tmp_path / "adapter", out_dir=tmp_path / "merged"
    )

    assert out == tmp_path / "merged"
    assert not list(tmp_path.glob(".merged.tmp*"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(model_dir()).chat_template
    ids = tokenizer("Where is my card? It was declined.", return_tensors="pt")["input_ids"]
    fresh = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32)
    with torch.no_grad():
        plain = fresh(ids).logits
        tuned = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert torch.allclose(merged, tuned, atol=1e-3)
    assert not torch.allclose(merged, plain, atol=1e-2)
