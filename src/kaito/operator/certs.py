"""The webhook's own certificates: a CA kept in a Secret, a serving certificate signed by it, the
CA bundle patched into the webhook configurations, rotation well before expiry.

Why the operator does this itself (as upstream Kaito does with knative's certificate controller):
a webhook with ``failurePolicy: Fail`` must never serve an expired or untrusted certificate, and
requiring cert-manager would add a second operator to every install. cert-manager stays an
opt-in (``--webhook-certs external``: the files arrive through a mounted Secret and cert-manager's
cainjector fills the caBundle; this controller then does nothing).

Every replica runs this loop (followers answer admission calls too), and they agree through the
Secret: whoever finds it missing creates it (``AlreadyExists`` means a peer won; read theirs),
whoever finds it due for rotation replaces it with an update that carries ``resourceVersion``
(``Conflict`` means a peer rotated first; read theirs). Each replica writes the Secret's pair to
its own ``cert_dir``, where :class:`kaito.runtime.CertWatcher` picks it up without a restart.

Rotation never breaks an admission call: a new serving certificate is signed by the same CA, so
the caBundle the apiserver holds stays valid; a new CA (rare: its lifetime is ten years) is
published in the bundle *next to* the old one, which stays there until it expires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kaito.runtime import (
    GVK,
    SECRET,
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
    get_logger,
)

log = get_logger("kaito.operator.certs")

VALIDATING = GVK("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration")
MUTATING = GVK("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration")

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
DAY = 86400.0


@dataclass
class CertOptions:
    """Where the certificates live and how long they last (names match config/ and the chart)."""

    namespace: str = "kaito-system"
    secret_name: str = "kaito-webhook-server-cert"
    service_name: str = "kaito-webhook-service"
    #: Folder the serving pair is written to; the webhook server's ``cert_dir``.
    cert_dir: str = os.path.join(tempfile.gettempdir(), "k8s-webhook-server", "serving-certs")
    validating_configurations: Sequence[str] = ("kaito-validating-webhook-configuration",)
    mutating_configurations: Sequence[str] = ("kaito-mutating-webhook-configuration",)
    #: More names or IP addresses for the serving certificate (e.g. 127.0.0.1 out of cluster).
    extra_hosts: Sequence[str] = ()
    ca_validity: float = 3650 * DAY
    cert_validity: float = 365 * DAY
    #: Rotate when less than this fraction of a certificate's lifetime is left.
    rotate_fraction: float = 1 / 3
    #: Longest sleep between checks (a peer's rotation or a re-created configuration is noticed).
    resync: float = 300.0
    #: Sleep after a failed attempt (API unreachable, configuration not installed yet).
    retry: float = 5.0
    hosts: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        svc, ns = self.service_name, self.namespace
        self.hosts = [
            svc,
            f"{svc}.{ns}",
            f"{svc}.{ns}.svc",
            f"{svc}.{ns}.svc.cluster.local",
            *self.extra_hosts,
        ]


# ---------------------------------------------------------------------------------- x509


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _backdate(validity: float) -> _dt.timedelta:
    """Tolerance for clocks behind ours: 5 minutes, or a tenth of a short lifetime (a backdate
    longer than a third of the lifetime would make a certificate due for rotation at birth)."""
    return _dt.timedelta(seconds=min(300.0, validity / 10))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca(validity: float, name: str = "kaito-webhook-ca") -> tuple[bytes, bytes]:
    """A self-signed CA (cert PEM, key PEM) that may sign only leaf certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(validity))
        .not_valid_after(now + _dt.timedelta(seconds=validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def new_serving_cert(
    ca_pem: bytes, ca_key_pem: bytes, hosts: Sequence[str], validity: float
) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (DNS names and IPs) signed by the CA; never outlives it."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = _now()
    not_after = min(now + _dt.timedelta(seconds=validity), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(validity))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _due(cert: x509.Certificate, fraction: float) -> float:
    """Seconds until ``cert`` should be replaced (<= 0: now)."""
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return (end - (end - start) * fraction) - _now().timestamp()


def _hosts_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


@dataclass
class CertState:
    """The decoded Secret; ``bundle`` is every CA the webhook configurations must trust."""

    ca_pem: bytes = b""
    ca_key_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> CertState:
        data = secret.get("data") or {}

        def get(k: str) -> bytes:
            return base64.b64decode(data.get(k) or "")

        return cls(get(CA_CERT), get(CA_KEY), get(TLS_CERT), get(TLS_KEY))

    def to_data(self) -> dict[str, str]:
        pairs = {
            CA_CERT: self.ca_pem,
            CA_KEY: self.ca_key_pem,
            TLS_CERT: self.cert_pem,
            TLS_KEY: self.key_pem,
        }
        return {k: base64.b64encode(v).decode() for k, v in pairs.items()}

    @property
    def bundle(self) -> bytes:
        """The CA file: the signing CA first, then older CAs that have not expired yet."""
        now = _now()
        live = [c for c in _certs(self.ca_pem) if c.not_valid_after_utc > now]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in live)


def plan(state: CertState, options: CertOptions) -> tuple[CertState, float]:
    """The state to store (``state`` itself when nothing is due) and seconds until the next due
    date. Pure, so the rotation rules are unit-tested without a cluster."""
    cas = _certs(state.ca_pem)
    new = CertState(state.ca_pem, state.ca_key_pem, state.cert_pem, state.key_pem)
    signing = cas[0] if cas else None
    if signing is None or not state.ca_key_pem or _due(signing, options.rotate_fraction) <= 0:
        ca_pem, ca_key = new_ca(options.ca_validity)
        older = [c for c in cas if c.not_valid_after_utc > _now()]
        new.ca_pem = ca_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in older)
        new.ca_key_pem = ca_key
        new.cert_pem = b""  # re-issue under the new CA
        signing = _certs(ca_pem)[0]
    leaves = _certs(new.cert_pem)
    leaf = leaves[0] if leaves else None
    if (
        leaf is None
        or not new.key_pem
        or leaf.issuer != signing.subject
        or _due(leaf, options.rotate_fraction) <= 0
        or not set(options.hosts) <= _hosts_of(leaf)
    ):
        new.cert_pem, new.key_pem = new_serving_cert(
            signing.public_bytes(serialization.Encoding.PEM),
            new.ca_key_pem,
            options.hosts,
            options.cert_validity,
        )
        leaf = _certs(new.cert_pem)[0]
    wait = min(_due(signing, options.rotate_fraction), _due(leaf, options.rotate_fraction))
    return new, max(wait, 0.0)


def _write_atomic(path: Path, data: bytes, mode: int) -> bool:
    """Replace ``path`` in one rename (a reader never sees half a file); False when unchanged."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return True


class CertController:
    """A Manager runnable (on every replica) keeping the Secret, the files and the caBundle right."""

    needs_leader_election = False
    name = "webhook-certs"

    def __init__(self, client: Client, options: CertOptions) -> None:
        self.client = client
        self.options = options
        self.rotations = 0
        """Times this replica wrote a new pair to the Secret."""
        self.ready = asyncio.Event()
        """Set once the files are written and the configurations carry the bundle."""
        self.serial: int | None = None
        """Serial of the serving certificate currently in ``cert_dir``."""

    async def start(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                wait = min(await self.sync(), self.options.resync)
                self.ready.set()
            except Exception as exc:  # keep serving what we have; try again soon
                log.warning("webhook certificates not synced, retrying", error=f"{type(exc).__name__}: {exc}")
                wait = self.options.retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.5))

    async def sync(self) -> float:
        """One pass; returns seconds until the certificates are next due."""
        state, wait = await self._sync_secret()
        self._write_files(state)
        await self._patch_configurations(state.bundle)
        return wait

    async def _sync_secret(self) -> tuple[CertState, float]:
        o = self.options
        for _ in range(5):
            try:
                secret: dict[str, Any] | None = await self.client.get(
                    SECRET, o.secret_name, o.namespace, cached=False
                )
            except NotFoundError:
                secret = None
            current = CertState.from_secret(secret) if secret else CertState()
            new, wait = plan(current, o)
            if secret is not None and new == current:
                return current, wait
            try:
                if secret is None:
                    await self.client.create(
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "kubernetes.io/tls",
                            "metadata": {
                                "name": o.secret_name,
                                "namespace": o.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "kaito"},
                            },
                            "data": new.to_data(),
                        }
                    )
                else:
                    await self.client.update({**secret, "data": new.to_data()})
            except (AlreadyExistsError, ConflictError):
                continue  # a peer wrote first: adopt what it wrote
            self.rotations += 1
            log.info(
                "webhook certificate issued",
                secret=f"{o.namespace}/{o.secret_name}",
                next_check_s=round(wait),
            )
            return new, wait
        raise ApiError(409, "Conflict", f"secret {o.namespace}/{o.secret_name} kept changing under us")

    def _write_files(self, state: CertState) -> None:
        folder = Path(self.options.cert_dir)
        folder.mkdir(parents=True, exist_ok=True)
        # Key first: the watcher loads only a matching pair, so a lone new key is just retried.
        _write_atomic(folder / TLS_KEY, state.key_pem, 0o600)
        _write_atomic(folder / TLS_CERT, state.cert_pem, 0o644)
        _write_atomic(folder / CA_CERT, state.bundle, 0o644)
        leaves = _certs(state.cert_pem)
        self.serial = leaves[0].serial_number if leaves else None

    async def _patch_configurations(self, bundle: bytes) -> None:
        encoded = base64.b64encode(bundle).decode()
        targets = [(VALIDATING, n) for n in self.options.validating_configurations] + [
            (MUTATING, n) for n in self.options.mutating_configurations
        ]
        missing = []
        for gvk, name in targets:
            for _ in range(5):
                try:
                    cfg = await self.client.get(gvk, name, cached=False)
                except NotFoundError:
                    missing.append(name)
                    break
                hooks = cfg.get("webhooks") or []
                if all((h.get("clientConfig") or {}).get("caBundle") == encoded for h in hooks):
                    break
                for h in hooks:
                    h.setdefault("clientConfig", {})["caBundle"] = encoded
                try:
                    await self.client.update(cfg)
                    log.info("webhook caBundle updated", configuration=name, kind=gvk.kind)
                    break
                except ConflictError:
                    continue
        if missing:
            raise NotFoundError(
                404, "NotFound", f"webhook configurations not installed yet: {', '.join(missing)}"
            )
