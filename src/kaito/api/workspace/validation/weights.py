"""Where a preset Workspace's weights come from: ``kaito.sh/weights-image`` (an OCI artifact in
the layout of :mod:`kaito.contract.weights`) or upstream's ``kaito.sh/use-local-weights`` (baked
into the node image). At most one source, on a preset Workspace only (a template's pod loads what
its author wrote), and an image the puller can reach."""

from __future__ import annotations

from kaito.api import names as c
from kaito.api.workspace.validation.checker import Checker
from kaito.api.workspace.validation.images import check_image, check_image_host
from kaito.contract.registry import RegistryRefError, split_image


def _path(key: str) -> str:
    return f"metadata.annotations[{key}]"


def check_weights_source(ck: Checker) -> None:
    ann = ck.annotations
    local = ann.get(c.ANNOTATION_USE_LOCAL_WEIGHTS)
    image = ann.get(c.ANNOTATION_WEIGHTS_IMAGE)
    if local is not None and local not in ("true", "false"):
        ck.error(
            _path(c.ANNOTATION_USE_LOCAL_WEIGHTS),
            f'{local!r}: set "true" to load the weights baked into the node image under '
            f"{c.LOCAL_WEIGHTS_HOST_PREFIX}/<preset>, or remove the annotation",
        )
    if image is None and local != "true":
        return
    preset = ck.ws.inference.preset if ck.ws.inference else None
    key = c.ANNOTATION_WEIGHTS_IMAGE if image is not None else c.ANNOTATION_USE_LOCAL_WEIGHTS
    if preset is None:
        ck.error(_path(key), "a weights source needs inference.preset; a template loads its own weights")
        return
    if image is not None and local == "true":
        ck.error(
            _path(c.ANNOTATION_WEIGHTS_IMAGE),
            f"the weights come from the node ({c.ANNOTATION_USE_LOCAL_WEIGHTS}) or from an image, "
            "not both; remove one of the two annotations",
        )
    if image is None:
        return
    check_image(ck, _path(c.ANNOTATION_WEIGHTS_IMAGE), image)
    check_image_host(ck, _path(c.ANNOTATION_WEIGHTS_IMAGE), image)
    try:
        split_image(image)
    except RegistryRefError as exc:
        ck.error(_path(c.ANNOTATION_WEIGHTS_IMAGE), f"{exc} (oras pulls from the host the image names)")
