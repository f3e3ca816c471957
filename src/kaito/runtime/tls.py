"""The read buffer asyncio gives each TLS connection.

asyncio's ``SSLProtocol`` allocates ``max_size`` bytes (256 KiB) for every TLS connection when it
is made, fills them with zeros, and keeps them for the connection's life. A controller holds
many such connections (a pool for ordinary requests, one per watch), each reading JSON much
smaller than that, so at 40 connections the buffers alone are 10 MB of resident memory. A
smaller buffer costs only more, smaller reads of a large response.

The setting is process-wide (a class attribute of the standard library), so the library never
changes it by itself: the application decides, as ``kaito controller`` does at start
(``--tls-read-buffer-kib``).
"""

from __future__ import annotations

from asyncio import sslproto

#: asyncio's own size, restored by ``set_tls_read_buffer(DEFAULT)``.
DEFAULT = sslproto.SSLProtocol.max_size

_MIN, _MAX = 4 * 1024, 1024 * 1024


def set_tls_read_buffer(size: int) -> None:
    """Use ``size`` bytes (4 KiB to 1 MiB) as the read buffer of every TLS connection made
    after this call, client and server side, in this process."""
    if not _MIN <= size <= _MAX:
        raise ValueError(
            f"TLS read buffer of {size} bytes is outside {_MIN}..{_MAX}; "
            "pick a size between 4 KiB and 1 MiB (kaito controller: --tls-read-buffer-kib 4..256)"
        )
    sslproto.SSLProtocol.max_size = size


def tls_read_buffer() -> int:
    """The read buffer size TLS connections made now get, in bytes."""
    return sslproto.SSLProtocol.max_size
