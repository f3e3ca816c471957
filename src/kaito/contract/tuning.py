"""What a tuning Job's pod spec and ``python -m kaito.tuning`` agree on.

The controller writes a Job whose containers run the tuning runtime's subcommands (``fetch`` into
the data folder, ``train`` into the results folder, ``push`` of the results as an adapter image);
the runtime reads the same paths, files and flags. Keeping them here means the Job builder never
imports the runtime (no torch on the controller side) and the two cannot disagree.

The default training configurations are upstream Kaito's ``lora-params-template`` and
``qlora-params-template`` values, written out as YAML text so that the controller can put them into
the ConfigMap it mounts and the runtime can use the same text as its base layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from kaito.contract.pod import CONFIG_DIR, DATA_DIR, RESULTS_DIR, TUNING_CONFIG_FILE

Method = Literal["lora", "qlora"]

#: The tuning container serves Prometheus metrics here (upstream exposes 5000 on it too).
TUNING_METRICS_PORT: Final = 5000
#: Written into the results folder by ``train`` when the adapter is complete (upstream's name);
#: the pusher waits for it.
DONE_MARKER: Final = "fine_tuning_completed.txt"
#: Written instead of DONE_MARKER when training fails, so a waiting pusher exits at once.
FAILED_MARKER: Final = "fine_tuning_failed.txt"
#: Where the ``imagePushSecret`` (type kubernetes.io/dockerconfigjson) is mounted in the pusher.
PUSH_SECRET_DIR: Final = "/mnt/push-secret"
#: Where the input image's pull secrets are mounted in the image puller.
PULL_SECRET_DIR: Final = "/mnt/pull-secret"
DOCKER_CONFIG_KEY: Final = ".dockerconfigjson"
#: The downloader's list of URLs, space separated (upstream's variable name).
ENV_DATA_URLS: Final = "DATA_URLS"
#: Names upstream uses for the ConfigMaps holding the defaults.
TEMPLATE_CONFIGMAPS: Final[dict[str, str]] = {
    "lora": "lora-params-template",
    "qlora": "qlora-params-template",
}
#: Media types of the adapter image: one gzip'd tar layer holding ``data/<adapter files>``, the
#: layout the inference side's adapter init container and upstream's puller unpack.
LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
#: Manifest annotation naming the base model the adapter was trained for (upstream's key).
MODEL_ANNOTATION: Final = "sh.kaito.model.name"

_COMMON = """\
  ModelConfig:
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"
{quant}
  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0

  TrainingArguments:
    output_dir: "{results}"
    ddp_find_unused_parameters: false
    save_strategy: "epoch"
    per_device_train_batch_size: 1

  DataCollator:
    mlm: false

  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""

_LORA_QUANT = """
  QuantizationConfig:
    load_in_4bit: false
"""
_QLORA_QUANT = """
  QuantizationConfig:
    load_in_4bit: true
    bnb_4bit_quant_type: "nf4"
    bnb_4bit_compute_dtype: "bfloat16"
    bnb_4bit_use_double_quant: true
"""

#: ``training_config.yaml`` text per method (the ConfigMap value and the runtime's defaults).
DEFAULT_TEMPLATES: Final[dict[str, str]] = {
    "lora": "training_config:\n" + _COMMON.format(quant=_LORA_QUANT, results=RESULTS_DIR),
    "qlora": "training_config:\n" + _COMMON.format(quant=_QLORA_QUANT, results=RESULTS_DIR),
}


@dataclass(frozen=True)
class TuningCommand:
    """One ``python -m kaito.tuning <sub>`` command line; the runtime's parser defines the flags."""

    sub: Literal["fetch", "pull", "train", "push"]
    args: dict[str, str | int | bool | list[str]] = field(default_factory=dict)
    python: str = "python"

    def argv(self) -> list[str]:
        out = [self.python, "-m", "kaito.tuning", self.sub]
        for key, value in sorted(self.args.items()):
            flag = "--" + key.replace("_", "-")
            if value is True:
                out.append(flag)
            elif value is False:
                continue
            elif isinstance(value, list):
                for item in value:
                    out += [flag, item]
            else:
                out += [flag, str(value)]
        return out


def train_command(model: str, method: Method, python: str = "python") -> TuningCommand:
    return TuningCommand(
        "train",
        {
            "model": model,
            "method": method,
            "config": f"{CONFIG_DIR}/{TUNING_CONFIG_FILE}",
            "data": DATA_DIR,
            "output": RESULTS_DIR,
            "metrics_port": TUNING_METRICS_PORT,
        },
        python,
    )
