"""Image references and registry credentials: the rules every registry client in kaito shares.

The tuning pusher/puller (in the tuning pod), ``kaito models push|pull`` (on a user's machine) and
the Workspace's weights init container all name images as ``host[:port]/repository[:tag|@digest]``
and read credentials from a ``kubernetes.io/dockerconfigjson`` document. Those rules live here, in
the pure contract, so that each client refuses the same references with the same words.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path


class RegistryRefError(ValueError):
    """An image reference or a registry secret kaito cannot use; the message names the fix."""


def split_image(image: str) -> tuple[str, str, str]:
    """``host[:port]/repo[:tag|@digest]`` -> (host, repository, reference)."""
    if "/" not in image:
        raise RegistryRefError(f"image {image!r} names no registry; use host/repository:tag")
    host, rest = image.split("/", 1)
    if "." not in host and ":" not in host and host != "localhost":
        raise RegistryRefError(f"image {image!r} names no registry host; use host/repository:tag")
    if "@" in rest:
        repo, ref = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        repo, ref = rest.rsplit(":", 1)
    else:
        repo, ref = rest, "latest"
    if not repo or repo != repo.lower():
        raise RegistryRefError(f"image {image!r}: the repository must be lowercase")
    return host, repo, ref


def credentials(docker_config: Path | None, host: str) -> tuple[str, str] | None:
    """User and password for ``host`` from a dockerconfigjson file (None: anonymous)."""
    if docker_config is None:
        return None
    try:
        data = json.loads(docker_config.read_text())
    except OSError as exc:
        raise RegistryRefError(f"registry secret {docker_config}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError:
        raise RegistryRefError(f"registry secret {docker_config}: not a dockerconfigjson document") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise RegistryRefError(
            f"registry secret {docker_config}: no auths; create it with kubectl create secret docker-registry"
        )
    for key, entry in auths.items():
        name = key.split("://", 1)[-1].split("/", 1)[0]
        if name != host or not isinstance(entry, dict):
            continue
        if entry.get("username") is not None and entry.get("password") is not None:
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryRefError(
                    f"registry secret {docker_config}: auth for {host} is not base64 user:password"
                ) from None
            return user, password
    raise RegistryRefError(
        f"registry secret {docker_config} has no credentials for {host}; add an auths entry for it"
    )
