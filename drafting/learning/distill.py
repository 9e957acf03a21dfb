"""Fine-tuning the local model on the replies agents sent: a LoRA adapter (peft + transformers).

The examples are chat transcripts whose last message is what the agent sent (drafting.learning.
distill_data writes them); the loss is taken on that reply's tokens only, so the adapter learns
to answer like the team, not to repeat customers. One plain PyTorch loop, on the GPU when there
is one and on the CPU otherwise: the shipped SmolLM2-135M trains a few hundred examples in
minutes on two cores. No Trainer: it would pull in `datasets` and a config surface we do not
need, and a loop this short is easier to read and to time.

torch, transformers and peft are imported inside the functions: this module is imported by the
worker and the commands that train, never by the web process (pyproject's import contracts).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drafting.learning.rouge import rouge_l

Messages = Sequence[dict[str, str]]
Progress = Callable[[str], None]

# Every linear projection of a Llama-style block: on a 135M model the adapter stays small
# (≈2.4M parameters at rank 8) and adapting the MLP too learns a style faster than attention
# alone.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters of one run (stored with the run's row as they were used)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 2
    batch_size: int = 8
    max_length: int = 768
    warmup_share: float = 0.1
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    seed: int = 0
    # A cap on optimiser steps (tests and smoke runs); None: `epochs` over the data.
    max_steps: int | None = None
    # Validation replies generated greedily and scored by ROUGE-L against the agents' (slow on
    # a CPU: about 2 s each for the 135M model); 0 skips it.
    generate_validation: int = 16
    max_new_tokens: int = 96

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values


@dataclass
class TrainResult:
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0
    steps: int = 0
    trainable_parameters: int = 0
    n_train: int = 0
    n_validation: int = 0


class DistillError(ValueError):
    """The examples cannot train an adapter (none, or none that fits)."""


@dataclass(frozen=True)
class _Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 where the loss is not taken (the prompt)


def _chat_text(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> str:
    return str(
        tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt
        )
    )


def encode(tokenizer: Any, messages: Messages, *, max_length: int) -> _Encoded | None:
    """The transcript's tokens, the loss on the last (assistant) message only.

    The prompt is the chat template up to the assistant's turn, exactly as vLLM renders it
    when drafting; a prompt longer than fits loses its oldest tokens (the answer is kept
    whole when it can be). None when the last message is not the assistant's or nothing of the
    answer fits.
    """
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        return None
    prompt = _chat_text(tokenizer, messages[:-1], generation_prompt=True)
    full = _chat_text(tokenizer, messages, generation_prompt=False)
    if not full.startswith(prompt):
        # A template that renders the history differently once an answer follows: the split
        # point would be a guess, so the example is left out.
        return None
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if not answer_ids:
        return None
    answer_ids = answer_ids[:max_length]
    room = max_length - len(answer_ids)
    prompt_ids = prompt_ids[-room:] if room > 0 else []
    return _Encoded(
        input_ids=[*prompt_ids, *answer_ids], labels=[-100] * len(prompt_ids) + list(answer_ids)
    )


def _batches(
    items: list[_Encoded], *, size: int, pad_id: int, rng: random.Random | None
) -> list[dict[str, Any]]:
    import torch

    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    out = []
    for start in range(0, len(order), size):
        chunk = [items[i] for i in order[start : start + size]]
        width = max(len(c.input_ids) for c in chunk)
        ids = [c.input_ids + [pad_id] * (width - len(c.input_ids)) for c in chunk]
        labels = [c.labels + [-100] * (width - len(c.labels)) for c in chunk]
        mask = [[1] * len(c.input_ids) + [0] * (width - len(c.input_ids)) for c in chunk]
        out.append(
            {
                "input_ids": torch.tensor(ids),
                "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask),
            }
        )
    return out


def _answer_loss(model: Any, batch: dict[str, Any], device: str) -> Any:
    """Mean cross-entropy over the answer's tokens: what the model's own `labels=` loss
    computes, but the output layer only where a label is. A support prompt (thread, passages)
    is most of each example, and the 49k-word output layer over every prompt token was about
    a fifth of each step's work and most of its memory (batch 8 × 512 tokens ran out of it)."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = causal_lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = batch["labels"][:, 1:].to(device)  # position i predicts token i + 1
    keep = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _mean_loss(model: Any, batches: list[dict[str, Any]], device: str) -> float | None:
    """Token-weighted mean loss over the batches (None without any answer token)."""
    import torch

    if not batches:
        return None
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            n = int((batch["labels"][:, 1:] != -100).sum())
            if not n:
                continue
            loss = _answer_loss(model, batch, device)
            total += float(loss) * n
            tokens += n
    model.train()
    return total / tokens if tokens else None


def _generate_rouge(
    model: Any, tokenizer: Any, examples: Sequence[Messages], *, hyper: Hyper, device: str
) -> dict[str, Any]:
    import torch

    scores = []
    model.eval()
    with torch.no_grad():
        for messages in examples[: hyper.generate_validation]:
            prompt = _chat_text(tokenizer, messages[:-1], generation_prompt=True)
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = ids[:, -(hyper.max_length) :].to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=hyper.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            reply = tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True)
            scores.append(rouge_l(messages[-1]["content"], reply))
    model.train()
    if not scores:
        return {}
    return {"rouge_l": sum(scores) / len(scores), "rouge_l_n": len(scores)}


def train_adapter(
    *,
    base_dir: Path,
    train: Sequence[Messages],
    validation: Sequence[Messages],
    out_dir: Path,
    hyper: Hyper | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a LoRA adapter for the model in `base_dir` on `train`, save it in `out_dir`.

    Steps: encode the transcripts (loss on the agent's reply only; those that do not fit are
    left out); measure the validation loss before training (the base model's) and after each
    epoch; train with AdamW, linear warm-up then decay; save the adapter (peft's
    adapter_config.json + adapter_model.safetensors, which vLLM's --lora-modules reads); score
    greedy validation replies by ROUGE-L against the agents' when asked. The result's
    `seconds` is the machine time, data loading and saving included (what the run is
    charged).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hyper = hyper or Hyper()
    say = progress or (lambda _message: None)
    started = time.monotonic()
    random.seed(hyper.seed)
    torch.manual_seed(hyper.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded_train = [e for m in train if (e := encode(tokenizer, m, max_length=hyper.max_length))]
    encoded_val = [
        e for m in validation if (e := encode(tokenizer, m, max_length=hyper.max_length))
    ]
    if not encoded_train:
        raise DistillError("no training example ends with an agent's reply that fits")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # Any: transformers' and peft's own annotations disagree on what a wrapped model is.
    model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    model = model.to(device)
    config = LoraConfig(
        r=hyper.rank,
        lora_alpha=hyper.alpha,
        lora_dropout=hyper.dropout,
        target_modules=list(hyper.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rng = random.Random(hyper.seed)  # noqa: S311 (shuffling batches, not secrets)
    val_batches = _batches(
        encoded_val, size=hyper.batch_size, pad_id=tokenizer.pad_token_id, rng=None
    )
    per_epoch = math.ceil(len(encoded_train) / hyper.batch_size)
    total_steps = per_epoch * hyper.epochs
    if hyper.max_steps is not None:
        total_steps = min(total_steps, hyper.max_steps)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=hyper.learning_rate
    )
    warmup = max(1, int(total_steps * hyper.warmup_share))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    result = TrainResult(
        device=device,
        trainable_parameters=trainable,
        n_train=len(encoded_train),
        n_validation=len(encoded_val),
    )
    before = _mean_loss(model, val_batches, device)
    if before is not None:
        result.loss_curve.append({"step": 0, "validation_loss": before})
    say(
        f"training {len(encoded_train)} examples, {total_steps} steps on {device} "
        f"({trainable:,} trainable parameters); validation loss {before or float('nan'):.3f}"
    )
    step = 0
    val = before
    model.train()
    for epoch in range(hyper.epochs):
        for batch in _batches(
            encoded_train, size=hyper.batch_size, pad_id=tokenizer.pad_token_id, rng=rng
        ):
            if step >= total_steps:
                break
            if not int((batch["labels"][:, 1:] != -100).sum()):
                continue  # an answer cut to its first token leaves nothing to predict
            loss = _answer_loss(model, batch, device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            result.loss_curve.append(
                {
                    "step": step,
                    "epoch": epoch + step / per_epoch - epoch,
                    "loss": float(loss.detach()),
                }
            )
            if step % 10 == 0 or step == total_steps:
                elapsed = time.monotonic() - started
                left = elapsed / step * (total_steps - step)
                say(
                    f"step {step}/{total_steps} loss {float(loss.detach()):.3f} (≈{left:.0f} s left)"
                )
        val = _mean_loss(model, val_batches, device)
        if val is not None:
            result.loss_curve.append({"step": step, "validation_loss": val})
            say(f"epoch {epoch + 1}: validation loss {val:.3f}")
        if step >= total_steps:
            break
    result.steps = step
    after = val  # measured after the last epoch
    result.validation = {
        "loss_before": before,
        "loss": after,
        "perplexity": math.exp(after) if after is not None else None,
        "n": len(encoded_val),
    }
    if hyper.generate_validation and validation:
        result.validation |= _generate_rouge(
            model, tokenizer, validation, hyper=hyper, device=device
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    result.seconds = time.monotonic() - started
    say(f"adapter saved to {out_dir} after {result.seconds:.0f} s")
    return result


# Tokenizer and template files a model folder carries beside its weights: a merged copy is
# served exactly like the base (same chat template, same special tokens).
_MODEL_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
)


def merge_adapter(*, base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Fold the LoRA adapter in `adapter_dir` into the weights of the model in `base_dir`
    and save the result as a model folder `out_dir` that vLLM serves like the base.

    On a CPU vLLM applies an adapter beside every projection at each step (about twice the
    base's decode time here); merged weights have the base's shape, so they cost what the
    base costs to serve. Merged in float32 (no rounding of the small update into bfloat16
    first), saved in the base's own dtype; tokenizer and chat template copied from the base.
    Written beside `out_dir` and renamed: an interrupted merge never leaves a folder that
    looks finished. Returns `out_dir`.
    """
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    stored = getattr(base.config, "dtype", None) or getattr(base.config, "torch_dtype", None)
    merged: Any = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if isinstance(stored, torch.dtype) and stored != torch.float32:
        merged = merged.to(stored)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        for name in _MODEL_SIDE_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, tmp / name)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.replace(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
