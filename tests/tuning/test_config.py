"""The training configuration: upstream's sections and templates, every key checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.tuning.conftest import last_line, run_tuning

from kaito.contract.tuning import DEFAULT_TEMPLATES, TEMPLATE_CONFIGMAPS
from kaito.tuning.config import SECTIONS, load_config
from kaito.tuning.errors import TuningError


def test_templates_have_upstreams_sections_and_values() -> None:
    assert set(TEMPLATE_CONFIGMAPS) == {"lora", "qlora"}
    for method, text in DEFAULT_TEMPLATES.items():
        body = yaml.safe_load(text)["training_config"]
        assert set(body) <= set(SECTIONS)
        assert body["LoraConfig"] == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
        assert body["TrainingArguments"]["output_dir"] == "/mnt/results"
        assert body["QuantizationConfig"]["load_in_4bit"] is (method == "qlora")
        assert body["DatasetConfig"] == {"shuffle_dataset": True, "train_test_split": 1}
    qlora = yaml.safe_load(DEFAULT_TEMPLATES["qlora"])["training_config"]["QuantizationConfig"]
    assert qlora["bnb_4bit_quant_type"] == "nf4" and qlora["bnb_4bit_use_double_quant"] is True


def test_defaults_load_and_user_file_overrides_per_key(tmp_path: Path) -> None:
    cfg = load_config("lora", None)
    assert cfg.lora["r"] == 8 and cfg.training["per_device_train_batch_size"] == 1
    f = tmp_path / "c.yaml"
    f.write_text("training_config:\n  LoraConfig:\n    r: 32\n  TrainingArguments:\n    max_steps: 3\n")
    cfg = load_config("lora", f)
    assert cfg.lora == {"r": 32, "lora_alpha": 8, "lora_dropout": 0.0}
    assert cfg.training["max_steps"] == 3 and cfg.training["save_strategy"] == "epoch"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  LoraConfig:\n    lora_alpa: 4\n",
            "training_config.LoraConfig.lora_alpa: unknown key; did you mean lora_alpha?",
        ),
        (
            "  TrainingArguments:\n    num_train_epoch: 2\n",
            "TrainingArguments.num_train_epoch: unknown key; did you mean num_train_epochs?",
        ),
        ("  LoraConfigs:\n    r: 4\n", "training_config.LoraConfigs: unknown key; did you mean LoraConfig?"),
        ("  QuantizationConfig:\n    load_in_3bit: true\n", "QuantizationConfig.load_in_3bit: unknown key"),
        ("  DatasetConfig:\n    train_test_split: 2\n", "train_test_split 2 must be a number in (0, 1]"),
        ("  ModelConfig:\n    torch_dtype: float64\n", "torch_dtype 'float64' is not one of"),
    ],
)
def test_bad_keys_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("training_config:\n" + body)
    with pytest.raises(TuningError) as info:
        load_config("lora", f)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_method_and_quantization_must_agree(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n")
    with pytest.raises(TuningError, match="method qlora needs"):
        load_config("qlora", f)
    f.write_text("training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n")
    with pytest.raises(TuningError, match="method lora must not quantize"):
        load_config("lora", f)


def test_cli_unknown_key_is_one_line_and_exit_1(tmp_path: Path, tiny_model: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("training_config:\n  LoraConfig:\n    rank: 4\n")
    proc = run_tuning(
        "train",
        "--model",
        str(tiny_model),
        "--config",
        str(f),
        "--data",
        str(tmp_path),
        "--output",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 1
    assert last_line(proc).startswith("kaito-tuning: ")
    assert "training_config.LoraConfig.rank: unknown key" in last_line(proc)
    assert (tmp_path / "out" / "fine_tuning_failed.txt").exists()
