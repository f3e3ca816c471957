"""Training examples from the data folder: parquet, jsonl, json or csv, as chat conversations.

Each row becomes one conversation rendered with the model's own chat template, so the adapter
learns the format the inference server will later apply to requests. A row is usable when it has
a ``messages`` column (OpenAI style: a list of ``{role, content}``, as in the seed's dolly file),
a prompt/response pair of columns (turned into a user and an assistant turn), or a single text
column. ``DatasetConfig`` names the columns when the defaults do not match. Loss is taken on the
whole rendered conversation, as upstream's trainer does.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito.tuning.errors import TuningError

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".csv")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "input", "context")
RESPONSE_COLUMNS = ("response", "completion", "answer", "output")
TEXT_COLUMNS = ("text",)

Message = dict[str, str]


@dataclass
class Examples:
    """Conversations (role/content lists) or plain texts, never both."""

    conversations: list[list[Message]]
    texts: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.conversations) + len(self.texts)


def find_files(data: Path, dataset_path: str | None = None) -> list[Path]:
    """The dataset files under ``data`` (or the one DatasetConfig.dataset_path names)."""
    if dataset_path:
        target = (data / dataset_path.lstrip("/")).resolve()
        if not target.is_relative_to(data.resolve()):
            raise TuningError(f"DatasetConfig.dataset_path {dataset_path!r} leaves the data folder {data}")
        if not target.exists():
            raise TuningError(f"DatasetConfig.dataset_path {dataset_path!r}: {target} does not exist")
        data = target
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise TuningError(f"no dataset: {data} does not exist")
    files = sorted(p for p in data.rglob("*") if p.is_file() and _kind(p) is not None)
    if not files:
        raise TuningError(
            f"no dataset file in {data}; give a .parquet, .jsonl, .json or .csv file "
            "(or set DatasetConfig.dataset_extension)"
        )
    return files


def _kind(path: Path, explicit: str | None = None) -> str | None:
    if explicit:
        return explicit.lstrip(".").lower()
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return None
    return "parquet" if head == b"PAR1" else None


def read_rows(path: Path, extension: str | None = None) -> list[dict[str, Any]]:
    kind = _kind(path, extension)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        if kind in ("jsonl", "ndjson"):
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise TuningError(f"{path.name}: line {n} is not JSON ({exc.msg})") from None
            return rows
        if kind == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, Mapping) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise TuningError(f"{path.name}: expected a JSON list of rows (or JSON lines)")
            return data
        if kind == "csv":
            with path.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
    except TuningError:
        raise
    except json.JSONDecodeError as exc:
        raise TuningError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise TuningError(f"{path.name}: not UTF-8 text; is it really {kind}?") from None
    except Exception as exc:  # pyarrow raises several types for damaged files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TuningError(f"{path.name}: unreadable {kind} file ({first})") from None
    raise TuningError(f"{path.name}: unknown file type; use .parquet, .jsonl, .json or .csv")


def _messages(value: Any, where: str) -> list[Message]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TuningError(f"{where}: messages is a string but not JSON") from None
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise TuningError(f"{where}: messages must be a non-empty list of {{role, content}}")
    out: list[Message] = []
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or "content" not in m:
            raise TuningError(f"{where}: every message needs a role and a content")
        out.append({"role": str(m["role"]), "content": str(m["content"] or "")})
    return out


def to_examples(rows: list[dict[str, Any]], cfg: Mapping[str, Any], source: str) -> Examples:
    """Rows to conversations using the configured or usual column names."""
    if not rows:
        raise TuningError(f"{source}: the dataset has no rows")
    columns = list(rows[0].keys()) if isinstance(rows[0], Mapping) else []
    if not columns:
        raise TuningError(f"{source}: rows are not records with named columns")
    messages_col = cfg.get("messages_column") or ("messages" if "messages" in columns else None)
    context_col = cfg.get("context_column")
    response_col = cfg.get("response_column")
    if messages_col is not None:
        if messages_col not in columns:
            raise TuningError(
                f"{source}: DatasetConfig.messages_column {messages_col!r} is not a column of {columns}"
            )
        return Examples(
            [_messages(r.get(messages_col), f"{source} row {i}") for i, r in enumerate(rows)], [], source
        )
    prompt = context_col or next((c for c in PROMPT_COLUMNS if c in columns), None)
    response = response_col or next((c for c in RESPONSE_COLUMNS if c in columns), None)
    for name, col in (("context_column", context_col), ("response_column", response_col)):
        if col is not None and col not in columns:
            raise TuningError(f"{source}: DatasetConfig.{name} {col!r} is not a column of {columns}")
    if prompt is not None and response is not None:
        convs = [
            [
                {"role": "user", "content": str(r.get(prompt) or "")},
                {"role": "assistant", "content": str(r.get(response) or "")},
            ]
            for r in rows
        ]
        return Examples(convs, [], source)
    text = response or next((c for c in TEXT_COLUMNS if c in columns), None)
    if text is not None:
        return Examples([], [str(r.get(text) or "") for r in rows], source)
    raise TuningError(
        f"{source}: no usable columns (found {', '.join(map(str, columns))}); provide messages, "
        "prompt/response or text columns, or name yours with DatasetConfig.messages_column, "
        "context_column and response_column"
    )


def load_examples(data: Path, cfg: Mapping[str, Any]) -> Examples:
    """All dataset files under ``data`` as one set of examples, shuffled if configured."""
    files = find_files(data, cfg.get("dataset_path"))
    convs: list[list[Message]] = []
    texts: list[str] = []
    for path in files:
        ex = to_examples(read_rows(path, cfg.get("dataset_extension")), cfg, path.name)
        convs += ex.conversations
        texts += ex.texts
    if convs and texts:
        raise TuningError("dataset files mix conversations and plain text; use one kind")
    if cfg.get("shuffle_dataset", True):
        rng = random.Random(int(cfg.get("shuffle_seed", 42)))
        rng.shuffle(convs)
        rng.shuffle(texts)
    split = float(cfg.get("train_test_split", 1))
    keep = max(1, round((len(convs) or len(texts)) * split))
    return Examples(convs[:keep], texts[:keep], ", ".join(p.name for p in files))


def render(examples: Examples, tokenizer: Any) -> Iterator[str]:
    """Each example as the text the model is trained on (chat template applied)."""
    if examples.conversations and not getattr(tokenizer, "chat_template", None):
        raise TuningError(
            "the model's tokenizer has no chat template; set training_config.ModelConfig.chat_template"
        )
    for conv in examples.conversations:
        yield str(tokenizer.apply_chat_template(conv, tokenize=False))
    for text in examples.texts:
        yield text + (tokenizer.eos_token or "")


def tokenize(examples: Examples, tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and labels (equal: causal LM loss on the whole text), truncated to max_length.

    Both keys hold the same list object, so a large dataset is not held twice in memory."""
    out: list[dict[str, list[int]]] = []
    for text in render(examples, tokenizer):
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) >= 2:
            ids = list(ids)
            out.append({"input_ids": ids, "labels": ids})  # one list: the collator copies, never mutates
    if not out:
        raise TuningError("every example is shorter than two tokens; the dataset is empty after tokenizing")
    return out
