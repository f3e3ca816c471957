"""Where the inference pod's weights come from: a weights image, the node's disk, or the Hub.

Without an annotation the server downloads the model at start, as before. Two annotations change
that (docs/weights-images.md):

* ``kaito.sh/weights-image: host/repo:tag`` (kaito's): an init container runs ``oras`` to pull the
  artifact (:mod:`kaito.contract.weights`) into the weights cache volume at
  :data:`~kaito.contract.weights.WEIGHTS_DIR`; the server gets ``--model`` that folder. The init
  container resolves the tag to a digest first and pulls nothing when the volume's cache marker
  names that digest already, so a pod restarted on a surviving volume starts without a download.
  The volume is a ``volumeClaimTemplate`` on the node's local NVMe (StorageClass
  ``kaito-local-nvme-disk``, upstream's) when the SKU has NVMe disks, else an ``emptyDir``.
* ``kaito.sh/use-local-weights: "true"`` (upstream's): the weights are baked into the node image
  under ``/opt/kaito/models/<preset>``; that folder is mounted read-only and given as ``--model``.

The pieces are added to the StatefulSet :func:`kaito.controllers.workspace.inference.build_statefulset`
made, so that module only calls :func:`apply_weights_source`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from kaito.api import names
from kaito.api.workspace import Workspace
from kaito.contract.registry import RegistryRefError, split_image
from kaito.contract.weights import CACHE_MARKER, WEIGHTS_DIR
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.controllers.workspace.podsecurity import restrict_pod
from kaito.presets import get_sku

Obj = dict[str, Any]
VOLUME = "model-weights-volume"  # upstream's volume and claim name
HOST_VOLUME = "model-weights-hostpath"
INIT_CONTAINER = "model-weights-downloader"  # upstream's init container name
PULL_SECRET_DIR = "/mnt/weights-pull-secret"
#: Files oras downloads at once (its own default is 3): weights are few, large files.
ORAS_CONCURRENCY = 8


class WeightsSourceError(ValueError):
    """The Workspace's weights source cannot be built as written; ``reason`` is the condition's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class WeightsSource:
    """What the pod gets: the folder the server loads, and the objects that put it there."""

    model_dir: str
    #: The server container's mount of the weights folder (read-only).
    mount: Obj
    volumes: tuple[Obj, ...] = ()
    claim_template: Obj | None = None
    init_container: Obj | None = None


def local_weights_path(preset_name: str) -> str:
    """Upstream's folder of baked weights for a preset: lowercased, path separators as '-'."""
    segment = preset_name.strip().lower().replace("/", "-").replace("\\", "-")
    if segment in ("", ".", ".."):
        raise WeightsSourceError(
            "InvalidWeightsSource",
            f"preset {preset_name!r} names no folder under {names.LOCAL_WEIGHTS_HOST_PREFIX}",
        )
    return f"{names.LOCAL_WEIGHTS_HOST_PREFIX}/{segment}"


def puller_script(image: str, registry_config: str | None) -> str:
    """The init container's shell: resolve, compare with the marker, pull by digest, mark.

    Pulling ``repo@digest`` (not the tag) makes the marker true for what was pulled even when the
    tag moves meanwhile. A new digest empties the folder first: a stale shard of an older version
    would otherwise be loaded beside the new ones."""
    try:
        host, repo, _ = split_image(image)
    except RegistryRefError as exc:
        raise WeightsSourceError(
            "InvalidWeightsSource", f"annotation {names.ANNOTATION_WEIGHTS_IMAGE}: {exc}"
        ) from None
    flags = f" --registry-config {shlex.quote(registry_config)}" if registry_config else ""
    d, marker, ref = (
        shlex.quote(WEIGHTS_DIR),
        shlex.quote(f"{WEIGHTS_DIR}/{CACHE_MARKER}"),
        shlex.quote(image),
    )
    repository = shlex.quote(f"{host}/{repo}")
    return "\n".join(
        [
            "set -eu",
            f"digest=$(oras resolve{flags} {ref})",
            f'if [ -f {marker} ] && [ "$(cat {marker})" = "$digest" ]; then',
            f'  echo "weights {image}@$digest already in the cache; nothing pulled"; exit 0',
            "fi",
            f"rm -rf {d}/* {d}/.[!.]* 2>/dev/null || true",
            f'oras pull{flags} --concurrency {ORAS_CONCURRENCY} -o {d} {repository}@"$digest"',
            f'echo "$digest" > {marker}',
            f'echo "weights {image}@$digest pulled"',
        ]
    )


def _cache_volume(
    ws: Workspace, storage_gib: int | None, options: WorkspaceControllerOptions
) -> tuple[Obj | None, Obj | None]:
    """A claim on local NVMe where the SKU has it (survives the pod), else an emptyDir."""
    sku = get_sku(ws.resource.instance_type) if ws.resource.instance_type else None
    if sku is not None and sku.nvme_gb > 0 and options.weights_nvme_storage_class:
        size = f"{storage_gib}Gi" if storage_gib else f"{sku.nvme_gb}G"
        claim: Obj = {
            "metadata": {"name": VOLUME},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": options.weights_nvme_storage_class,
                "resources": {"requests": {"storage": size}},
            },
        }
        return None, claim
    return {"name": VOLUME, "emptyDir": {}}, None


def weights_source(
    ws: Workspace, storage_gib: int | None, options: WorkspaceControllerOptions
) -> WeightsSource | None:
    """The pod's weights source from the annotations (None: the server downloads, as before)."""
    ann = ws.metadata.annotations or {}
    image = ann.get(names.ANNOTATION_WEIGHTS_IMAGE)
    local = ann.get(names.ANNOTATION_USE_LOCAL_WEIGHTS) == "true"
    if image is None and not local:
        return None
    preset = ws.inference.preset if ws.inference else None
    if preset is None:
        raise WeightsSourceError("InvalidWeightsSource", "a weights source needs inference.preset")
    if image is not None and local:
        raise WeightsSourceError(
            "InvalidWeightsSource",
            f"{names.ANNOTATION_WEIGHTS_IMAGE} and {names.ANNOTATION_USE_LOCAL_WEIGHTS} both set; remove one",
        )
    if local:
        path = local_weights_path(preset.name)
        return WeightsSource(
            model_dir=path,
            mount={"name": HOST_VOLUME, "mountPath": path, "readOnly": True},
            volumes=({"name": HOST_VOLUME, "hostPath": {"path": path, "type": "Directory"}},),
        )
    assert image is not None
    secrets = (preset.preset_options.image_pull_secrets if preset.preset_options else None) or []
    config = f"{PULL_SECRET_DIR}/config.json" if secrets else None
    init: Obj = {
        "name": INIT_CONTAINER,
        "image": options.weights_puller_image,
        "command": ["sh", "-c", puller_script(image, config)],
        "volumeMounts": [{"name": VOLUME, "mountPath": WEIGHTS_DIR}],
    }
    if options.image_pull_policy:
        init["imagePullPolicy"] = options.image_pull_policy
    volume, claim = _cache_volume(ws, storage_gib, options)
    volumes: list[Obj] = [volume] if volume is not None else []
    if secrets:
        # oras reads one docker config: the first pull secret's (docs/weights-images.md).
        init["volumeMounts"].append(
            {"name": "weights-pull-secret", "mountPath": PULL_SECRET_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": "weights-pull-secret",
                "secret": {
                    "secretName": secrets[0],
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    return WeightsSource(
        model_dir=WEIGHTS_DIR,
        mount={"name": VOLUME, "mountPath": WEIGHTS_DIR, "readOnly": True},
        volumes=tuple(volumes),
        claim_template=claim,
        init_container=init,
    )


def _set_model(command: list[str], model_dir: str) -> list[str]:
    """The server's ``--model`` set to the weights folder. Where it replaces a Hub id (an
    ``org/model`` Workspace), that id stays the served name, so clients keep asking for it."""
    out = list(command)
    if "--model" in out:
        i = out.index("--model")
        if i + 1 < len(out):
            hub_id, out[i + 1] = out[i + 1], model_dir
            if "--revision" in out:  # the Hub revision means nothing for a folder: the image pins it
                j = out.index("--revision")
                del out[j : j + 2]
            if "--served-model-name" not in out:
                out += ["--served-model-name", hub_id]
            return out
    return [*out, "--model", model_dir]


def apply_weights_source(
    sts: Obj, ws: Workspace, storage_gib: int | None, options: WorkspaceControllerOptions
) -> None:
    """Add the weights source's init container, volume (or claim template) and ``--model`` to a
    preset StatefulSet; a Workspace without a weights annotation is left exactly as it was."""
    source = weights_source(ws, storage_gib, options)
    if source is None:
        return
    spec = sts["spec"]["template"]["spec"]
    container = spec["containers"][0]
    container["command"] = _set_model(container["command"], source.model_dir)
    container.setdefault("volumeMounts", []).append(source.mount)
    spec.setdefault("volumes", []).extend(source.volumes)
    if source.init_container is not None:
        # First: a pod whose weights cannot be pulled fails before it copies adapters.
        spec["initContainers"] = [source.init_container, *(spec.get("initContainers") or [])]
        restrict_pod(spec)  # the puller gets the same restricted securityContext as the rest
    if source.claim_template is not None:
        sts["spec"]["volumeClaimTemplates"] = [source.claim_template]
