"""A small OCI distribution client for weights artifacts: blobs streamed from and to files.

Why not oras-py (the tuning pusher's client): it reads a blob into memory to upload it and is not in
the core install, and model files are gigabytes. This client speaks the few distribution API calls
a weights push and pull need (``HEAD``/``GET`` blob, monolithic ``POST``+``PUT`` upload, manifest
``GET``/``PUT``), with basic credentials or the bearer-token dance real registries (ACR, MCR, GHCR)
ask for, sent only to the registry host itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urljoin

from kaito.contract.registry import RegistryRefError, credentials, split_image
from kaito.contract.weights import MANIFEST_MEDIA_TYPE

if TYPE_CHECKING:
    import requests

_CHUNK = 1 << 20
_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class WeightsError(Exception):
    """A push or pull that cannot go on; the message is one line naming the image and the fix."""


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


@dataclass
class RegistryClient:
    """One registry, one repository: the image's host and name, with credentials and trust."""

    image: str
    host: str
    repo: str
    ref: str
    plain_http: bool = False
    verify: bool | str = True
    auth: tuple[str, str] | None = None
    session: requests.Session = field(init=False, repr=False)
    _bearer: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import requests

        self.session = requests.Session()
        # Many parallel streams to one host: one pooled connection per stream.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    @classmethod
    def for_image(
        cls,
        image: str,
        *,
        registry_config: Path | None = None,
        ca_file: Path | None = None,
        plain_http: bool = False,
    ) -> RegistryClient:
        try:
            host, repo, ref = split_image(image)
            auth = credentials(registry_config, host) if registry_config is not None else None
        except RegistryRefError as exc:
            raise WeightsError(str(exc)) from None
        if ca_file is not None and not ca_file.is_file():
            raise WeightsError(f"--ca-file {ca_file} does not exist; give the registry's CA certificate")
        verify: bool | str = str(ca_file) if ca_file else os.environ.get("SSL_CERT_FILE") or True
        return cls(image, host, repo, ref, plain_http, verify, auth)

    @property
    def base(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}/v2/{self.repo}"

    def with_ref(self, ref: str) -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"{self.host}/{self.repo}{sep}{ref}"

    # -- transport -----------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        elif self.auth is not None:
            import base64

            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        stream: bool = False,
        rewind: Callable[[], None] | None = None,
    ) -> requests.Response:
        """One call, answering a 401 challenge once (basic, or a bearer token for its scope)."""
        import requests

        for attempt in (1, 2):
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=self._headers(headers),
                    data=data,
                    stream=stream,
                    verify=self.verify,
                    timeout=(30, 300),
                )
            except requests.exceptions.SSLError as exc:
                raise WeightsError(
                    f"registry {self.host}: TLS certificate not trusted ({_first(exc)}); pass --ca-file"
                ) from None
            except requests.exceptions.ConnectionError:
                raise WeightsError(
                    f"registry {self.host} is unreachable ({what}); check the image's host and port "
                    "and that the registry runs"
                ) from None
            except requests.exceptions.RequestException as exc:
                raise WeightsError(f"registry {self.host}: {what} failed ({_first(exc)})") from None
            if resp.status_code == 401 and attempt == 1 and self._answer_challenge(resp):
                resp.close()
                if rewind is not None:
                    rewind()
                continue
            break
        if resp.status_code in ok:
            return resp
        body = resp.text[:200] if not stream else ""
        resp.close()
        if resp.status_code in (401, 403):
            raise WeightsError(
                f"registry {self.host} denied {what} (HTTP {resp.status_code}); "
                "pass --registry-config with credentials that may do it"
            )
        raise WeightsError(f"registry {self.host}: {what} failed (HTTP {resp.status_code} {body.strip()})")

    def _answer_challenge(self, resp: requests.Response) -> bool:
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            # Basic credentials were sent already (when there are any): a 401 is final.
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm:
            return False
        import requests

        try:
            token_resp = self.session.get(
                realm,
                params=fields,
                auth=self.auth,
                verify=self.verify,
                timeout=30,
            )
        except requests.exceptions.RequestException as exc:
            raise WeightsError(f"registry {self.host}: token service unreachable ({_first(exc)})") from None
        if token_resp.status_code != 200:
            return False
        body = token_resp.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            return False
        self._bearer = token
        return True

    # -- blobs ---------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        resp = self.request("HEAD", f"{self.base}/blobs/{digest}", what=f"check of {digest}", ok=(200, 404))
        resp.close()
        return resp.status_code == 200

    def upload_blob(self, digest: str, size: int, source: Path | bytes) -> None:
        """A monolithic upload: ``POST`` opens the session, one ``PUT`` streams the file."""
        start = self.request("POST", f"{self.base}/blobs/uploads/", what=f"upload of {digest}", ok=(202,))
        start.close()
        location = start.headers.get("Location")
        if not location:
            raise WeightsError(f"registry {self.host}: upload of {digest} got no Location")
        url = urljoin(f"{self.base}/", location)
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if isinstance(source, bytes):
            self.request(
                "PUT", url, what=f"upload of {digest}", ok=(201,), headers=headers, data=source
            ).close()
            return
        with source.open("rb") as f:

            def rewind() -> None:
                f.seek(0)

            self.request(
                "PUT",
                url,
                what=f"upload of {digest}",
                ok=(201,),
                headers=headers,
                data=f,
                rewind=rewind,
            ).close()

    def download_blob(self, digest: str, size: int, target: Path, progress: Callable[[int], None]) -> None:
        """Stream one blob into ``target`` (through a partial file), checking its size and digest."""
        partial = target.with_name(target.name + ".kaito-partial")
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        got = 0
        resp = self.request("GET", f"{self.base}/blobs/{digest}", what=f"download of {digest}", stream=True)
        try:
            # readinto one buffer: no new bytes object per chunk, which with several streams on
            # a small machine was a measurable part of the pull (bench/weights.py).
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            with resp, partial.open("wb") as out:
                while n := resp.raw.readinto(view):
                    chunk = view[:n]
                    got += n
                    if got > size:
                        raise WeightsError(
                            f"image {self.image}: blob {digest} sent more than its {size} bytes"
                        )
                    h.update(chunk)
                    out.write(chunk)
                    progress(n)
            if got != size or "sha256:" + h.hexdigest() != digest:
                raise WeightsError(f"image {self.image}: blob {digest} does not match its digest or size")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    # -- manifests -----------------------------------------------------------------------------

    def put_manifest(self, body: bytes, ref: str) -> str:
        resp = self.request(
            "PUT",
            f"{self.base}/manifests/{ref}",
            what=f"push of {self.image}",
            ok=(201,),
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
            data=body,
        )
        resp.close()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(self, ref: str | None = None) -> tuple[bytes, str]:
        """The manifest's bytes and digest (computed here; the registry's header is not trusted)."""
        resp = self.request(
            "GET",
            f"{self.base}/manifests/{ref or self.ref}",
            what=f"read of {self.image}",
            ok=(200, 404),
            headers={"Accept": _ACCEPT},
        )
        if resp.status_code == 404:
            raise WeightsError(f"image {self.image} does not exist in {self.host}; push it first")
        body = resp.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if self.ref.startswith("sha256:") and ref is None and digest != self.ref:
            raise WeightsError(f"image {self.image}: the registry sent a manifest of another digest")
        return body, digest
