"""set_tls_read_buffer: the buffer asyncio gives TLS connections made after the call, and large
answers still arrive whole through a small one."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kaito.runtime import set_tls_read_buffer
from kaito.runtime.tls import DEFAULT, tls_read_buffer


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    set_tls_read_buffer(DEFAULT)


def _contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
    client = ssl.create_default_context(cafile=str(tmp / "tls.crt"))
    return server, client


async def test_connections_made_after_the_call_get_the_smaller_buffer(tmp_path: Path, restore: None) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)
    payload = bytes(range(256)) * 8192  # 2 MiB, 128 times the buffer

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        assert tls_read_buffer() == DEFAULT == 256 * 1024
        set_tls_read_buffer(16 * 1024)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        protocol = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        assert len(protocol._ssl_buffer) == 16 * 1024
        writer.write(b"x")
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        assert received == payload
        assert len(protocol._ssl_buffer) == 16 * 1024  # reading 2 MiB did not grow it back
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_sizes_out_of_range_are_refused_naming_the_flag(restore: None) -> None:
    for size in (0, 1024, 2 * 1024 * 1024):
        with pytest.raises(ValueError, match="--tls-read-buffer-kib"):
            set_tls_read_buffer(size)
    assert tls_read_buffer() == DEFAULT
