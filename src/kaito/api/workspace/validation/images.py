"""Image references anywhere in the spec: well-formed, and input images from a host a node may reach."""

from __future__ import annotations

from kaito.api.imageref import EXAMPLE as IMAGE_EXAMPLE
from kaito.api.imageref import image_ref_problem
from kaito.api.workspace.validation.checker import Checker
from kaito.contract.urls import image_host_problem


def check_image(ck: Checker, path: str, ref: str) -> None:
    problem = image_ref_problem(ref)
    if problem is None:
        return
    fix = f"write it as [registry/]repository[:tag][@sha256:digest], e.g. {IMAGE_EXAMPLE}"
    if problem.placeholder:
        # The seed's and upstream's README placeholders (ACR_REPO_HERE...) land here.
        ck.warn(path, f"{ref!r}: {problem.message}, so no node can pull it; {fix}")
        return
    ck.error(path, f"{ref!r} is not a valid image reference: {problem.message}; {fix}")


def check_image_host(ck: Checker, path: str, ref: str) -> None:
    """Input images are pulled from the host they name: not the node's inside (SSRF rules)."""
    problem = image_host_problem(ref)
    if problem:
        ck.error(path, f"{ref!r}: {problem}")
