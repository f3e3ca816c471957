"""Serving certificates that follow their files on disk, for TLS servers that never restart.

Why polling and a context switch per handshake: in a cluster the key pair arrives through a
mounted Secret that the kubelet swaps atomically (a symlink flip) whenever the certificate is
rotated, and a webhook that kept serving the old certificate would fail every admission call
once it expired. A listener cannot be re-bound without a window of refused connections, and
calling ``load_cert_chain`` on the live context is unsafe: a mismatched cert/key pair (files
caught half-rewritten) leaves OpenSSL's context without a usable key. So every change is loaded
into a *fresh* context first; only a pair that loads is swapped in, and the listening context's
SNI callback hands each new handshake the current one. Connections already open keep the
certificate they were accepted with, as in Go's ``tls.Config.GetCertificate``.

The watch is a stat() poll (mtime, size, inode of both files, following symlinks) because it
needs nothing from the platform and catches the kubelet's symlink flips as well as in-place
rewrites; a pair that fails to load is retried on every poll until it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from kaito.runtime.logging import get_logger

_log = get_logger("kaito.runtime.certwatcher")

_Signature = tuple[tuple[int, int, int], tuple[int, int, int]]


class CertificateError(RuntimeError):
    """The certificate/key pair could not be loaded; the message names the files and the cause."""


class CertWatcher:
    """Keeps an ``ssl.SSLContext`` loaded from ``cert_file``/``key_file``, reloading on change.

    ``server_context()`` is the one context to hand to the listening socket; it is never mutated
    after creation and switches each new handshake to the latest loaded pair.
    ``configure`` runs on every context built (TLS versions, ciphers, client CAs), so a reload
    never drops a setting; ``on_read(ok)`` is told of every load attempt (metrics).
    """

    needs_leader_election = False
    name = "certwatcher"

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        poll_interval: float = 10.0,
        configure: Callable[[ssl.SSLContext], None] | None = None,
        on_read: Callable[[bool], None] | None = None,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.poll_interval = poll_interval
        self._configure = configure
        self._on_read = on_read
        self._current: ssl.SSLContext | None = None
        self._signature: _Signature | None = None
        self._failed_signature: _Signature | None = None
        self._callbacks: list[Callable[[ssl.SSLContext], None]] = []
        self._server_ctx: ssl.SSLContext | None = None
        self.serial: int | None = None
        """Serial number of the certificate new handshakes get (None until one is loaded)."""
        self.not_after: float | None = None
        """Expiry of that certificate, seconds since the epoch."""
        self.reloads = 0
        """Successful loads, the first included."""
        self.errors = 0
        """Failed load attempts."""

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def add_callback(self, callback: Callable[[ssl.SSLContext], None]) -> None:
        """Called with the new context after every successful load (e.g. to export expiry)."""
        self._callbacks.append(callback)

    def _signature_now(self) -> _Signature:
        a, b = os.stat(self.cert_file), os.stat(self.key_file)
        return (a.st_mtime_ns, a.st_size, a.st_ino), (b.st_mtime_ns, b.st_size, b.st_ino)

    def _new_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # HTTP/1.1 only, as controller-runtime's webhook server defaults to (HTTP/2 rapid reset).
        ctx.set_alpn_protocols(["http/1.1"])
        if self._configure is not None:
            self._configure(ctx)
        return ctx

    def read_certificate(self) -> None:
        """Load the pair now; raises :class:`CertificateError` and keeps the old pair on failure."""
        try:
            signature = self._signature_now()
            ctx = self._new_context()
            ctx.load_cert_chain(self.cert_file, self.key_file)
            # imported when serving: ~16 MB resident that an operator without webhooks never needs
            from cryptography import x509

            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.errors += 1
            if self._on_read is not None:
                self._on_read(False)
            raise CertificateError(
                f"cannot load serving certificate {self.cert_file} with key {self.key_file}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        # The pair loaded from the files as they were at `signature` or later; if they changed in
        # between, the next poll sees a newer signature and loads again.
        self._current = ctx
        self._signature = signature
        self._failed_signature = None
        self.serial = cert.serial_number
        self.not_after = cert.not_valid_after_utc.timestamp()
        self.reloads += 1
        if self._on_read is not None:
            self._on_read(True)
        _log.info(
            "serving certificate loaded",
            cert=str(self.cert_file),
            serial=f"{cert.serial_number:x}",
            not_after=cert.not_valid_after_utc.isoformat(),
        )
        for cb in self._callbacks:
            try:
                cb(ctx)
            except Exception:
                _log.error("certificate reload callback failed", exc_info=True)

    def poll(self) -> bool:
        """One watch step: reload if either file changed; True when a new pair was loaded."""
        try:
            signature = self._signature_now()
        except OSError as exc:
            if self._failed_signature is not None or self._current is None:
                _log.debug("serving certificate files not readable yet", error=str(exc))
            else:
                _log.warning("serving certificate files not readable; serving the old pair", error=str(exc))
            self._failed_signature = ((0, 0, 0), (0, 0, 0))
            return False
        if signature == self._signature:
            return False
        try:
            self.read_certificate()
        except CertificateError as exc:
            if signature != self._failed_signature:  # one line per change, not per poll
                _log.warning("serving certificate not reloaded; keeping the current pair", error=str(exc))
            self._failed_signature = signature
            return False
        return True

    def server_context(self) -> ssl.SSLContext:
        """The listening socket's context: each handshake is switched to the current pair."""
        if self._current is None:
            raise CertificateError("no serving certificate loaded yet: call read_certificate() first")
        if self._server_ctx is None:
            # The first loaded context doubles as the listening one (no second read of files that
            # may be mid-rotation); later contexts never get a callback, they are only switched to.
            base = self._current

            def pick(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
                # Called for every ClientHello, with or without SNI (IP-addressed clients send none).
                current = self._current
                if current is not None and conn.context is not current:
                    conn.context = current

            base.sni_callback = pick
            self._server_ctx = base
        return self._server_ctx

    async def start(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set (a Manager runnable; needs no leadership)."""
        while not stop.is_set():
            self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)


def certificate_serial(der: bytes) -> int:
    """Serial number of a DER certificate, e.g. ``SSLObject.getpeercert(binary_form=True)``."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number
