"""Dataset files and columns: parquet, jsonl, json and csv; messages or prompt/response; chat template."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from tests.tuning.conftest import conversations, write_parquet

from kaito.tuning.dataset import load_examples, render, tokenize
from kaito.tuning.errors import TuningError

PAIRS = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(6)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_messages_parquet_rendered_with_the_models_chat_template(tmp_path: Path, tokenizer: Any) -> None:
    write_parquet(tmp_path / "train.parquet", conversations(5))
    ex = load_examples(tmp_path, {"shuffle_dataset": False})
    assert len(ex) == 5 and ex.conversations[0][1]["role"] == "user"
    text = next(render(ex, tokenizer))
    assert text.startswith("<|system|>\nanswer briefly<|end|>\n<|user|>\n")
    assert "<|assistant|>\nkaito tuning adapter answer<|end|>" in text
    rows = tokenize(ex, tokenizer, 64)
    assert rows[0]["input_ids"] == rows[0]["labels"] and len(rows[0]["input_ids"]) <= 64


def test_prompt_response_jsonl_becomes_user_and_assistant(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in PAIRS) + "\n")
    ex = load_examples(tmp_path, {"shuffle_dataset": False})
    assert ex.conversations[2] == [
        {"role": "user", "content": "question 2"},
        {"role": "assistant", "content": "answer 2"},
    ]


def test_csv_and_json_with_named_columns(tmp_path: Path) -> None:
    with (tmp_path / "d.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["q", "a"])
        w.writeheader()
        w.writerows({"q": r["prompt"], "a": r["response"]} for r in PAIRS)
    ex = load_examples(tmp_path, {"context_column": "q", "response_column": "a", "shuffle_dataset": False})
    assert ex.conversations[0][1]["content"] == "answer 0"
    other = tmp_path / "j"
    other.mkdir()
    (other / "d.json").write_text(json.dumps([{"text": "plain words"}]))
    assert load_examples(other, {}).texts == ["plain words"]


def test_train_test_split_keeps_the_training_share(tmp_path: Path) -> None:
    write_parquet(tmp_path / "t.parquet", conversations(10))
    assert len(load_examples(tmp_path, {"train_test_split": 0.8})) == 8


def test_corrupt_parquet_is_one_line(tmp_path: Path) -> None:
    good = write_parquet(tmp_path / "x.parquet", conversations(5)).read_bytes()
    (tmp_path / "x.parquet").write_bytes(good[:40] + b"\0" * 64 + good[-30:])
    with pytest.raises(TuningError, match=r"x.parquet: unreadable parquet file") as info:
        load_examples(tmp_path, {})
    assert "\n" not in str(info.value)


def test_dataset_without_usable_columns_names_the_columns(tmp_path: Path) -> None:
    write_parquet(tmp_path / "x.parquet", [{"foo": 1, "bar": "z"}])
    with pytest.raises(TuningError, match="no usable columns \\(found foo, bar\\)"):
        load_examples(tmp_path, {})


def test_named_column_that_does_not_exist(tmp_path: Path) -> None:
    write_parquet(tmp_path / "x.parquet", conversations(2))
    with pytest.raises(TuningError, match="messages_column 'chat' is not a column"):
        load_examples(tmp_path, {"messages_column": "chat"})


def test_empty_folder_and_escaping_path(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="no dataset file"):
        load_examples(tmp_path, {})
    with pytest.raises(TuningError, match="leaves the data folder"):
        load_examples(tmp_path, {"dataset_path": "../../etc/passwd"})
