"""Which data-source URLs and addresses a pod may fetch from (server-side request forgery rules).

Two sides need the same answer: the webhook refuses a Workspace whose ``urls`` aim at this
cluster or the cloud's metadata service, and the tuning downloader, which runs inside the cluster,
must refuse the same places again after DNS resolution and after every redirect (a public name can
resolve to, or redirect to, a private address). So the pure check lives here in the contract, and
both import it: the rules cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_IPS: Final = frozenset({"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"})
_FIX = "use a public http(s) URL"
#: What stands in for a URL's query string, fragment or credentials wherever a URL is shown.
REDACTED: Final = "REDACTED"
#: An http(s) URL inside free text: up to whitespace, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"""https?://[^\s'"<>]+""", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit to print: its query string, fragment and user:password replaced.

    Presigned dataset URLs (Azure SAS, S3 ``X-Amz-Signature``, GCS signed URLs) carry their
    credential in the query string, so a URL is never printed, logged or written to a status
    with its query. Only scheme, host, port and path stay: enough to tell which file it was.
    The program that downloads still gets the real URL; only what it says about it is redacted.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_unparsed(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_unparsed(url: str) -> str:
    """A URL urlsplit refuses (a bad IPv6 literal): keep what is before any '?' or '#', and no
    user:password."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    head = url[:cut]
    if "@" in head:
        scheme, sep, rest = head.partition("://")
        head = f"{scheme}{sep}{REDACTED}@{rest.rsplit('@', 1)[1]}" if sep else REDACTED
    return head + (f"?{REDACTED}" if cut < len(url) else "")


def redact_urls(text: str) -> str:
    """``text`` with every http(s) URL in it passed through :func:`redact_url` (error lines,
    progress lines and container termination messages that may quote a presigned URL)."""
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(m: re.Match[str]) -> str:
    # Punctuation closing a sentence ("...?sig=x: HTTP 403", "(see https://h/p?x).") is text, not
    # URL: it stays after the redacted URL, so redacting an already redacted line changes nothing.
    url = m.group(0)
    core = url.rstrip(".,;:!?)]}")
    return redact_url(core) + url[len(core) :]


def url_problem(url: str) -> str | None:
    """Why a data URL is refused (not http(s), or aimed at this cluster or the cloud), or None.

    Host names are judged by name only (no DNS here: the webhook must answer offline); a
    downloader must also check each address the name resolves to with :func:`address_problem`.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return f"{shown!r} is not a valid URL; use an http(s) URL"
    if parts.scheme not in ("http", "https"):
        return f"{shown!r} must use http or https"
    if not host:
        return f"{shown!r} has no host; use an http(s) URL with a public host"
    host = host.rstrip(".").lower()
    if host in METADATA_HOSTS or host in METADATA_IPS:
        return f"{shown!r} points at a cloud metadata address; {_FIX}"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{shown!r} points at a loopback address; {_FIX}"
    addr = as_ip(host)
    if addr is None:
        return None
    problem = address_problem(addr)
    return f"{shown!r} {problem}; {_FIX}" if problem else None


def image_host_problem(image: str) -> str | None:
    """Why an image reference's registry host may not be pulled from, or None.

    An adapter or tuning image is pulled by the node (or by kaito's own puller) from the host the
    reference names, so a Workspace author could aim the pull at the node's loopback, link-local
    or cloud metadata address. Private registries (10.x, 192.168.x) are ordinary and allowed.
    Judged by name, as :func:`url_problem` (no DNS at admission).
    """
    first, sep, _ = image.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return None  # no registry host: Docker Hub
    if first.startswith("["):
        host = first[1:].split("]", 1)[0]
    else:
        host = first.rsplit(":", 1)[0] if first.count(":") == 1 else first
    host = host.rstrip(".").lower()
    fix = "push the image to a registry outside the node (a public or cluster registry name)"
    if host in METADATA_HOSTS or host in METADATA_IPS:
        return f"registry {first!r} is a cloud metadata address; {fix}"
    if host == "localhost" or host.endswith(".localhost"):
        return f"registry {first!r} is a loopback address; {fix}"
    addr = as_ip(host)
    if addr is None:
        return None
    problem = address_problem(addr)
    if problem is None or problem == "points at a private address":
        return None
    return f"registry {first!r} {problem}; {fix}"


def address_problem(addr: IPAddress) -> str | None:
    """Why a (resolved) address may not be contacted, as 'points at a ... address', or None."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if str(addr) in METADATA_IPS:
        return "points at a cloud metadata address"
    if addr.is_loopback or addr.is_unspecified:
        return "points at a loopback address"
    if addr.is_link_local:
        return "points at a link-local address"
    if addr.is_private or addr.is_reserved or addr.is_multicast or not addr.is_global:
        return "points at a private address"
    return None


def as_ip(host: str) -> IPAddress | None:
    """The address a host denotes, including the decimal and hex forms URL parsers accept."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # The forms resolvers accept are addresses too: one number in decimal, hex or octal
        # ("2130706433", "0x7f000001", "017700000001") and the shorthands ("127.1", "0x7f.1",
        # "0177.0.0.1"). inet_aton reads them exactly as the C resolver that would connect does.
        if re.fullmatch(r"[0-9a-fx.]+", host):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
