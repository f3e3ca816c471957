"""The pod contract: what a pod spec written by a controller promises the program inside it.

Controllers write pod specs; the inference and tuning runtimes run inside those pods. Neither may
import the other, so every name they must agree on (ports, mount paths, environment variables,
adapter file layout, command lines) lives here, in a pure leaf module that both import. Changing
a value here changes both sides at once; they cannot drift.
"""

from kaito.contract.pod import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    ADAPTERS_DIR,
    ANNOTATION_STANDIN,
    CONFIG_DIR,
    DATA_DIR,
    DEFAULT_MODEL_DIR,
    DIST_PORT,
    ENV_API_KEY,
    ENV_CONFIG,
    ENV_INSTANCE_TYPE,
    ENV_MODEL,
    ENV_POD_INDEX,
    ENV_PRESET,
    ENV_STANDIN,
    HEALTH_PATH,
    IMAGE_ADAPTER_DIR,
    INFERENCE_CONFIG_FILE,
    INFERENCE_PORT,
    RESULTS_DIR,
    SHM_DIR,
    TUNING_CONFIG_FILE,
    InferenceCommand,
    adapter_strength_env,
    is_adapter_env_name,
)

__all__ = [
    "ADAPTERS_DIR",
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "ANNOTATION_STANDIN",
    "CONFIG_DIR",
    "DATA_DIR",
    "DEFAULT_MODEL_DIR",
    "DIST_PORT",
    "ENV_API_KEY",
    "ENV_CONFIG",
    "ENV_INSTANCE_TYPE",
    "ENV_MODEL",
    "ENV_POD_INDEX",
    "ENV_PRESET",
    "ENV_STANDIN",
    "HEALTH_PATH",
    "IMAGE_ADAPTER_DIR",
    "INFERENCE_CONFIG_FILE",
    "INFERENCE_PORT",
    "RESULTS_DIR",
    "SHM_DIR",
    "TUNING_CONFIG_FILE",
    "InferenceCommand",
    "adapter_strength_env",
    "is_adapter_env_name",
]
