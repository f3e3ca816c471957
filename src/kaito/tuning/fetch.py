"""Download dataset URLs into the data folder without becoming a server-side request forgery tool.

The downloader runs inside the cluster, so a URL that names (or resolves to, or redirects to) a
private, loopback, link-local or metadata address would let a Workspace author read from places
only the cluster can reach. Every hop is therefore checked with the same rules the webhook applies
(``kaito.contract.urls``), the host is resolved once, each resolved address is checked, and the
connection goes to that checked address (TLS still verifies the certificate against the host
name), so a DNS answer that changes between check and connect cannot slip through. Redirects are
followed by hand and each target goes through the same checks.

Bodies are streamed to disk with a size cap, and a Content-Type that cannot be a dataset (an HTML
login page, say) is refused before anything is written.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from kaito.contract.urls import IPAddress, address_problem, url_problem
from kaito.tuning.errors import TuningError

DEFAULT_MAX_BYTES = 20 * 1024**3
MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
CHUNK = 1 << 20
#: Content types a dataset file may be served as. Missing or generic binary types are accepted
#: (object stores and hubs serve parquet as octet-stream); markup is refused.
ALLOWED_TYPES = frozenset(
    {
        "application/octet-stream",
        "binary/octet-stream",
        "application/vnd.apache.parquet",
        "application/x-parquet",
        "application/parquet",
        "application/json",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/x-ndjson",
        "application/ndjson",
        "text/csv",
        "application/csv",
        "text/plain",
        "application/gzip",
        "application/x-gzip",
    }
)
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".ndjson")


@dataclass
class FetchOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 60.0
    #: Addresses the SSRF rules are waived for. Only tests set this (a loopback data server); the
    #: Job builder never does.
    allow_addresses: frozenset[IPAddress] = field(default_factory=frozenset)
    #: CA bundle for HTTPS (default: the system's).
    ca_file: str | None = None
    progress: Callable[[str], None] = lambda line: None


def _resolve(host: str, port: int, opts: FetchOptions, url: str) -> IPAddress:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TuningError(f"{url}: cannot resolve {host} ({exc.strerror})") from None
    addrs: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if addr in opts.allow_addresses:
            addrs.append(addr)
            continue
        problem = address_problem(addr)
        if problem:
            # Any bad answer refuses the name: a name that can resolve inside is not a data source.
            raise TuningError(f"{url}: {host} resolves to {addr}, which {problem}; use a public URL")
        addrs.append(addr)
    if not addrs:
        raise TuningError(f"{url}: {host} has no address")
    return addrs[0]


def _check_url(url: str, opts: FetchOptions) -> tuple[str, int, IPAddress, bool, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is None or literal not in opts.allow_addresses:
        problem = url_problem(url)
        if problem:
            raise TuningError(problem)
    addr = _resolve(host, port, opts, url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return host, port, addr, https, target


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand, whatever DNS says now."""

    def __init__(self, host: str, port: int, addr: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addr = addr

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._addr), self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addr: IPAddress, timeout: float, ctx: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._addr = addr
        self._ctx = ctx

    def connect(self) -> None:
        raw = socket.create_connection((str(self._addr), self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self.host)


def _file_name(url: str, index: int, used: set[str]) -> str:
    base = os.path.basename(unquote(urlsplit(url).path)) or f"data-{index}"
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base).lstrip(".") or f"data-{index}"
    name = base
    n = 1
    while name in used:
        name = f"{n}-{base}"
        n += 1
    used.add(name)
    return name


def open_url(url: str, opts: FetchOptions) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET ``url``, following redirects by hand with every hop checked (scheme, name, each resolved
    address, the connection pinned to the checked address); returns the open connection and its
    200 response, which the caller reads and then closes. Raises TuningError.

    The OCI puller sends registry blob redirects here too, so a registry cannot aim the pull at
    the cluster's inside any more than a dataset URL can.
    """
    ctx = ssl.create_default_context(cafile=opts.ca_file)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        host, port, addr, https, target = _check_url(current, opts)
        conn: http.client.HTTPConnection = (
            _PinnedHTTPS(host, port, addr, opts.timeout_s, ctx)
            if https
            else _PinnedHTTP(host, port, addr, opts.timeout_s)
        )
        keep = False
        try:
            conn.request("GET", target, headers={"User-Agent": "kaito-tuning", "Accept": "*/*"})
            resp = conn.getresponse()
            if resp.status in REDIRECT_CODES:
                location = resp.getheader("Location")
                if not location:
                    raise TuningError(f"{url}: redirect {resp.status} without a Location")
                current = urljoin(current, location)
                continue
            if resp.status != 200:
                raise TuningError(f"{url}: HTTP {resp.status} {resp.reason}")
            keep = True
            return conn, resp
        except (OSError, http.client.HTTPException) as exc:
            raise _download_error(url, exc) from None
        finally:
            if not keep:
                conn.close()
    raise TuningError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _download_error(url: str, exc: OSError | http.client.HTTPException) -> TuningError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TuningError(f"{url}: TLS certificate not trusted ({exc.verify_message})")
    return TuningError(f"{url}: download failed ({type(exc).__name__}: {exc})")


def fetch_one(url: str, dest: Path, opts: FetchOptions) -> int:
    """Download ``url`` to ``dest``; returns the bytes written. Raises TuningError."""
    conn, resp = open_url(url, opts)
    try:
        return _save(url, resp, dest, opts)
    except (OSError, http.client.HTTPException) as exc:
        raise _download_error(url, exc) from None
    finally:
        conn.close()


def _save(url: str, resp: http.client.HTTPResponse, dest: Path, opts: FetchOptions) -> int:
    ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if ctype and ctype not in ALLOWED_TYPES:
        raise TuningError(
            f"{url}: served as {ctype}, not a dataset file (parquet, jsonl, json or csv); "
            "check that the URL downloads the file itself"
        )
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > opts.max_bytes:
        raise TuningError(f"{url}: {int(length)} bytes is over the {opts.max_bytes}-byte limit")
    part = dest.with_name(dest.name + ".part")
    total = 0
    last = time.monotonic()
    try:
        with part.open("wb") as out:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > opts.max_bytes:
                    raise TuningError(f"{url}: more than the {opts.max_bytes}-byte limit; stopped")
                out.write(chunk)
                if time.monotonic() - last > 5:
                    opts.progress(f"fetch {dest.name}: {total} bytes")
                    last = time.monotonic()
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return total


def fetch_all(urls: Iterable[str], data_dir: Path, opts: FetchOptions) -> list[Path]:
    """Every URL into ``data_dir``; nothing is left half-written when one fails."""
    data_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written: list[Path] = []
    try:
        for i, url in enumerate(urls):
            dest = data_dir / _file_name(url, i, used)
            size = fetch_one(url, dest, opts)
            opts.progress(f"fetched {url} -> {dest} ({size} bytes)")
            written.append(dest)
    except TuningError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
