"""Model weights delivered as OCI artifacts: push a model folder to a registry, pull it back.

The layout is :mod:`kaito.contract.weights` (shared with the Workspace's pod spec); this package
is the client side that ``kaito models push|pull`` and the benchmark run. It sits beside the
in-pod programs: it may import the presets and the contract, nothing of the controllers.
"""

from kaito.weights.registry import RegistryClient, WeightsError
from kaito.weights.transfer import DEFAULT_CONCURRENCY, TransferResult, pull_folder, push_folder, resolve

__all__ = [
    "DEFAULT_CONCURRENCY",
    "RegistryClient",
    "TransferResult",
    "WeightsError",
    "pull_folder",
    "push_folder",
    "resolve",
]
