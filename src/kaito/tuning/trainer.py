"""LoRA and QLoRA training with peft and the transformers Trainer; the adapter lands in the results.

QLoRA is real or refused: before the model is loaded, a 4-bit layer is quantized and run forwards
and backwards on the device the Job got. If bitsandbytes cannot do that here (no GPU build, a CPU
without its kernels), the run stops with one line saying so; it never trains a plain LoRA while the
Workspace says qlora, because the user sized the GPU for a 4-bit base model.

Target modules default to peft's ``all-linear`` (every linear layer but the output head). For the
Phi-3 family that is ``qkv_proj, o_proj, gate_up_proj, down_proj``, which is also what vLLM can
apply LoRA to; upstream's ``q_proj,k_proj,...`` list does not exist in transformers' Phi-3.
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito.contract import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from kaito.contract.tuning import DONE_MARKER, FAILED_MARKER
from kaito.tuning.config import TrainingConfig
from kaito.tuning.dataset import load_examples, tokenize
from kaito.tuning.errors import TuningError
from kaito.tuning.metrics import Progress


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    adapter_dir: Path | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def qlora_problem() -> str | None:
    """Why 4-bit QLoRA cannot run on this machine, or None when a real 4-bit layer trains here."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        return f"bitsandbytes is not installed ({exc.name})"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to(device)
        weight = layer.weight
        if getattr(weight, "quant_state", None) is None:
            return f"bitsandbytes {bnb.__version__} does not quantize weights to 4 bits on {device}"
        x = torch.randn(2, 64, device=device, requires_grad=True)
        layer(x).float().sum().backward()
        if x.grad is None:
            return f"bitsandbytes {bnb.__version__} 4-bit layers give no gradient on {device}"
    except Exception as exc:  # any failure of the probe means: not supported here
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        return f"bitsandbytes {getattr(bnb, '__version__', '?')} 4-bit does not run on {device} ({first})"
    return None


def _dtype(name: Any) -> Any:
    import torch

    if name in (None, "auto"):
        return "auto" if name == "auto" else None
    return getattr(torch, str(name))


class _Collator:
    """Right-pads a batch; padding is masked out of the loss and the attention."""

    def __init__(self, pad_id: int, multiple: int | None, progress: Progress | None) -> None:
        self.pad_id, self.multiple, self.progress = pad_id, multiple, progress

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids, labels, mask = [], [], []
        tokens = 0
        for b in batch:
            n = len(b["input_ids"])
            tokens += n
            pad = width - n
            ids.append(b["input_ids"] + [self.pad_id] * pad)
            labels.append(b["labels"] + [-100] * pad)
            mask.append([1] * n + [0] * pad)
        if self.progress is not None:
            self.progress.add_tokens(tokens)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


def load_model(model_dir: Path, cfg: TrainingConfig) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    margs = dict(cfg.model)
    template = margs.pop("chat_template", None)
    dtype = _dtype(margs.pop("torch_dtype", margs.pop("dtype", None)))
    if not torch.cuda.is_available() and margs.get("device_map") == "auto":
        margs["device_map"] = None  # accelerate's dispatch adds nothing on one CPU
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir,
            local_files_only=bool(margs.get("local_files_only", True)),
            trust_remote_code=bool(margs.get("trust_remote_code", False)),
        )
    except (OSError, ValueError) as exc:
        raise TuningError(
            f"model {model_dir}: cannot load the tokenizer ({str(exc).splitlines()[0]})"
        ) from None
    if template:
        tokenizer.chat_template = Path(template).read_text() if Path(str(template)).is_file() else template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.method == "qlora":
        problem = qlora_problem()
        if problem:
            raise TuningError(
                f"method qlora cannot run here: {problem}; use method lora or a node with a supported GPU"
            )
        margs["quantization_config"] = BitsAndBytesConfig(**cfg.quantization)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **margs)
    except (OSError, ValueError) as exc:
        raise TuningError(f"model {model_dir}: cannot load ({str(exc).splitlines()[0]})") from None
    return model, tokenizer


def _lora(cfg: TrainingConfig, model: Any) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    largs = dict(cfg.lora)
    if not largs.get("target_modules"):
        env = os.environ.get("DEFAULT_TARGET_MODULES")
        largs["target_modules"] = [m.strip() for m in env.split(",")] if env else _linear_targets(model)
    largs.setdefault("task_type", "CAUSAL_LM")
    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        return get_peft_model(model, LoraConfig(**largs))
    except (ValueError, TypeError) as exc:
        raise TuningError(f"training_config.LoraConfig: {str(exc).splitlines()[0]}") from None


def _linear_targets(model: Any) -> list[str]:
    """Short names of every linear layer but the output head (peft's all-linear, written out so
    that the adapter config lists module names vLLM matches, not one full path per layer)."""
    import torch

    linear = ("Linear4bit", "Linear8bitLt")
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ in linear)
    }
    names.discard("lm_head")
    return sorted(names)


def _training_args(cfg: TrainingConfig, output: Path) -> Any:
    from transformers import TrainingArguments

    targs = dict(cfg.training)
    targs["output_dir"] = str(output)
    targs.setdefault("report_to", "none")
    targs.setdefault("logging_steps", 1)
    targs.setdefault("remove_unused_columns", False)
    targs.setdefault("disable_tqdm", True)
    try:
        return TrainingArguments(**targs)
    except (ValueError, TypeError) as exc:
        raise TuningError(f"training_config.TrainingArguments: {str(exc).splitlines()[0]}") from None


def train(model_dir: Path, data: Path, output: Path, cfg: TrainingConfig, progress: Progress) -> TrainResult:
    """Tune ``model_dir`` on the dataset in ``data``; writes the adapter and DONE_MARKER to ``output``."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, set_seed

    if cfg.collator.get("mlm"):
        raise TuningError(
            "training_config.DataCollator.mlm: true is masked-LM training; causal LM tuning needs mlm: false"
        )
    output.mkdir(parents=True, exist_ok=True)
    for marker in (DONE_MARKER, FAILED_MARKER):
        (output / marker).unlink(missing_ok=True)
    examples = load_examples(data, cfg.dataset)
    model, tokenizer = load_model(model_dir, cfg)
    rows = tokenize(examples, tokenizer, cfg.max_length)
    progress.log(
        "dataset", source=examples.source, examples=len(rows), tokens=sum(len(r["input_ids"]) for r in rows)
    )
    del examples  # the rendered conversations are not needed once tokenized; not kept for the whole run
    args = _training_args(cfg, output)
    set_seed(args.seed)  # the LoRA A matrices are random: same config, same run
    model = _lora(cfg, model)
    result = TrainResult(steps=0)

    class _Report(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None:
                result.losses.append(float(loss))
            progress.update(state.global_step, state.max_steps, float(state.epoch or 0), loss)

    collator = _Collator(int(tokenizer.pad_token_id), cfg.collator.get("pad_to_multiple_of"), progress)
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[_Report()]
    )
    trainer.remove_callback(PrinterCallback)  # our progress lines replace its dict dumps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    quantized = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    if cfg.method == "qlora" and quantized == 0:
        raise TuningError("method qlora: the base model was loaded without 4-bit layers; refusing to train")
    # Everything alive now (the libraries, the model, the tokenized dataset) lives for the whole
    # run. Freezing it takes it out of the cyclic collector's sight: the full gc.collect() that
    # Trainer.train() starts with (accelerate's free_memory) and any automatic full collection
    # during the run then walk only what training itself allocates, not ~500k long-lived objects
    # (measured on the tiny model: 0.4-1.1 s of the training loop on 2 loaded cores, freeing ~20
    # objects). Freezing does no work of its own (no collection here, none moved out of the timed
    # loop) and is undone right after training.
    gc.freeze()
    progress.log(
        "start",
        method=cfg.method,
        trainable_params=trainable,
        linear4bit_layers=quantized,
        device=str(args.device),
        gc_frozen_objects=gc.get_freeze_count(),
    )
    started = time.monotonic()
    progress.started = started
    progress.token_count = 0
    try:
        out = trainer.train()
    except torch.cuda.OutOfMemoryError:
        raise TuningError("out of GPU memory; lower per_device_train_batch_size or max_length") from None
    finally:
        gc.unfreeze()
    result.seconds = time.monotonic() - started
    release_free_heap()  # after the timed loop: the activations' freed heap goes back to the OS
    result.steps = int(out.global_step)
    result.tokens = progress.token_count
    model.save_pretrained(output, safe_serialization=True)
    _tidy_adapter_config(output / ADAPTER_CONFIG_FILE, str(model_dir))
    if not (output / ADAPTER_WEIGHTS_FILE).is_file():
        raise TuningError(f"peft wrote no {ADAPTER_WEIGHTS_FILE} into {output}")
    result.adapter_dir = output
    (output / DONE_MARKER).write_text(
        json.dumps({"steps": result.steps, "tokens": result.tokens, "seconds": round(result.seconds, 3)})
        + "\n"
    )
    return result


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where there is none.

    Training frees its activations, but glibc keeps the freed pages of its heap resident: about
    21.6 MiB after 6 steps of the tiny model (measured on the benchmark). Nothing after training needs
    them (saving an adapter is small), so they go back before the process saves and exits.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:  # musl and other libcs without it
        return False
    trim(0)
    return True


def _tidy_adapter_config(path: Path, base: str) -> None:
    """Keep the adapter config free of this pod's paths except the base model it was made for."""
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
