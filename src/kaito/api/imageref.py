"""Container image references as a registry understands them: ``[host[:port]/]path[:tag][@digest]``.

A Workspace names images in several places (adapters, tuning input and output, a private
preset's image, a pod template's containers). A typo there is only found when a node fails to
pull, minutes later, as ``ErrImagePull`` on a pod the user may never look at. Parsing the
reference at admission turns that into a message naming the field and the fix.

The grammar is the one container runtimes and registries share (the OCI distribution
reference format): lowercase path components separated by ``/`` (each may contain ``.``, ``_``,
``__`` or runs of ``-`` between alphanumerics), an optional registry host first (recognised by a
``.`` or ``:`` or being ``localhost``), a tag of at most 128 word characters, ``.`` and ``-``,
and a digest ``algorithm:hex``. The whole name is at most 255 characters.

A reference whose only faults are upper case and ``_`` in the host or path is flagged
(:attr:`ImageRefProblem.placeholder`): runtimes refuse it, but the seed's and upstream's README
examples carry placeholders such as ``ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1`` that users
replace, so callers may choose to warn rather than reject for that kind of problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"^(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
MAX_NAME_LENGTH = 255
EXAMPLE = "myregistry.azurecr.io/adapters/phi-3:0.0.1"


@dataclass(frozen=True)
class ImageRefProblem:
    message: str
    #: The only faults are upper case and '_' in host or path: a README placeholder.
    placeholder: bool = False


def image_ref_problem(ref: str) -> ImageRefProblem | None:
    """Why ``ref`` is not a pullable image reference, or None when it is one."""
    problem = _problem(ref)
    if problem is None or problem.placeholder:
        return problem
    name, sep, rest = _split_name(ref)
    if _problem(name.lower().replace("_", "-") + sep + rest) is None:
        return ImageRefProblem(f"{problem.message} (upper case or '_' in the name)", placeholder=True)
    return problem


def _split_name(ref: str) -> tuple[str, str, str]:
    """``ref`` as (name, separator, tag-and-digest), the name being what may be lower-cased."""
    slash = ref.rfind("/")
    for i in range(slash + 1, len(ref)):
        if ref[i] in ":@":
            return ref[:i], ref[i], ref[i + 1 :]
    return ref, "", ""


def _problem(ref: str) -> ImageRefProblem | None:
    if not ref or ref != ref.strip():
        return ImageRefProblem("is empty or has surrounding spaces")
    if "://" in ref:
        return ImageRefProblem("has a URL scheme; image references have none (drop 'https://')")
    if any(ch.isspace() for ch in ref):
        return ImageRefProblem("contains whitespace")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            return ImageRefProblem(f"digest {digest!r} is not algorithm:hex (e.g. sha256: and 64 hex digits)")
        algorithm, hexpart = digest.split(":", 1)
        if algorithm == "sha256" and len(hexpart) != 64:
            return ImageRefProblem(f"a sha256 digest has 64 hex digits, this one has {len(hexpart)}")
    name, tag = rest, None
    # The tag follows the last ':' that comes after the last '/', so a registry port is not a tag.
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            return ImageRefProblem(
                f"tag {tag!r} is not valid (at most 128 letters, digits, '_', '.', '-', not starting "
                "with '.' or '-')"
            )
    if not name:
        return ImageRefProblem("has no repository name")
    if len(name) > MAX_NAME_LENGTH:
        return ImageRefProblem(
            f"repository name is {len(name)} characters, at most {MAX_NAME_LENGTH} are allowed"
        )
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.match(first):
            return ImageRefProblem(f"registry host {first!r} is not a valid host[:port]")
        parts = parts[1:]
    upper = False
    for part in parts:
        if _PATH_COMPONENT.match(part):
            continue
        if _PATH_COMPONENT.match(part.lower()):
            upper = True
            continue
        if not part:
            return ImageRefProblem("has an empty path component ('//' or a trailing '/')")
        return ImageRefProblem(
            f"path component {part!r} is not valid (lowercase letters and digits, separated by "
            "'.', '_', '__' or '-')"
        )
    if upper:
        return ImageRefProblem("repository names must be lowercase", placeholder=True)
    return None
