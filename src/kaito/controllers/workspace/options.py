"""Settings of the workspace controller (filled from ``kaito.operator.OperatorOptions``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

#: The inference image: kaito's own server (``python -m kaito.inference``), tagged like the
#: controller so a controller upgrade rolls matching servers.
try:
    _VERSION = metadata.version("kaito")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    _VERSION = "0.0.0"
DEFAULT_INFERENCE_IMAGE = f"ghcr.io/kaito-project/kaito/inference:{_VERSION}"
#: The tuning Job's image, named beside the inference image (``hack/images.sh`` builds both).
DEFAULT_TUNING_IMAGE = DEFAULT_INFERENCE_IMAGE.replace("/inference:", "/tuning:")
#: The weights init container's image: the oras project's own (a shell and ``oras``), at the
#: version kaito builds and tests (``kaito.envtest.orascli.ORAS_VERSION``).
DEFAULT_WEIGHTS_PULLER_IMAGE = "ghcr.io/oras-project/oras:v1.3.6"


@dataclass
class WorkspaceControllerOptions:
    #: Image of the inference container for preset Workspaces (``accessMode: private`` presets
    #: bring their own through ``presetOptions.image``).
    inference_image: str = DEFAULT_INFERENCE_IMAGE
    #: Image of the tuning Job's container (kaito publishes no images: an in-cluster install
    #: names the one it built, e.g. the chart's ``tuningImage``).
    tuning_image: str = DEFAULT_TUNING_IMAGE
    #: Image of the init container that pulls a ``kaito.sh/weights-image`` (needs ``sh`` and ``oras``).
    weights_puller_image: str = DEFAULT_WEIGHTS_PULLER_IMAGE
    #: StorageClass of the weights cache claim on SKUs with local NVMe ("" : always an emptyDir).
    weights_nvme_storage_class: str = "kaito-local-nvme-disk"
    #: ``imagePullPolicy`` of the inference and adapter containers ("" leaves the API's default).
    image_pull_policy: str = "IfNotPresent"
    #: ControllerRevisions kept per Workspace (the current one included); older ones are pruned.
    revision_history_limit: int = 10
    #: Workspaces reconciled at once. Reconciles are short and mostly await the API, so 16
    #: workers on one event loop keep 100 new Workspaces flowing without queueing.
    max_concurrent_reconciles: int = 16
    #: fieldManager for server-side apply and the name the audit log shows.
    field_manager: str = "kaito-workspace-controller"
    #: Seconds between startup-probe attempts times this many: how long a model may load.
    startup_failure_threshold: int = 180
