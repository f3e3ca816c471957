"""The peer for bench/tuning.py: a plain peft + transformers script, as a user would write it.

Same model, data, LoRA rank, batch size, learning rate and steps as the kaito run; it renders the
conversations with the tokenizer's chat template, trains with ``Trainer`` and prints one JSON line
with the training tokens per second (non-padding tokens fed to the model / seconds of
``trainer.train()``), measured the same way kaito's runtime measures its own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--output", required=True)
    a = p.parse_args()

    tok = AutoTokenizer.from_pretrained(a.model)
    rows = pq.read_table(a.data).to_pylist()
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    data = [
        tok(t, add_special_tokens=False, truncation=True, max_length=a.max_length)["input_ids"] for t in texts
    ]
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    model = get_peft_model(
        model, LoraConfig(r=a.rank, lora_alpha=a.rank * 2, target_modules=targets, task_type="CAUSAL_LM")
    )
    seen = [0]

    def collate(batch: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(b) for b in batch)
        seen[0] += sum(len(b) for b in batch)
        ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
        mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    args = TrainingArguments(
        output_dir=a.output,
        max_steps=a.steps,
        per_device_train_batch_size=a.batch,
        learning_rate=5e-3,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=7,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    model.save_pretrained(Path(a.output))
    print(json.dumps({"tokens": seen[0], "seconds": seconds, "tokens_per_s": seen[0] / seconds}), flush=True)


if __name__ == "__main__":
    main()
