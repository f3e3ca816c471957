"""A throw-away PKI for one local control plane.

The apiserver must run with real TLS, client-certificate authentication and a service-account
signing key, or RBAC and ServiceAccount tokens cannot be tested for real. We mint everything
fresh per cluster so that two clusters never trust each other.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of every file the control-plane programs need."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def in_folder(cls, folder: Path) -> Pki:
        """Where :func:`create_pki` puts each file; also how a kept cluster finds them again."""
        return cls(
            ca_cert=folder / "ca.crt",
            ca_key=folder / "ca.key",
            serving_cert=folder / "apiserver.crt",
            serving_key=folder / "apiserver.key",
            admin_cert=folder / "kaito-admin.crt",
            admin_key=folder / "kaito-admin.key",
            sa_key=folder / "sa.key",
            sa_pub=folder / "sa.pub",
        )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = _dt.datetime.now(_dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_client_cert(pki: Pki, folder: Path, user: str, groups: list[str]) -> tuple[Path, Path]:
    """A client certificate for ``user`` in ``groups``, signed by the cluster CA."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    cert = _cert(x509.Name(attrs), key, ca_cert.subject, ca_key)
    safe = user.replace(":", "_")
    cert_path, key_path = folder / f"{safe}.crt", folder / f"{safe}.key"
    cert_path.write_bytes(_pem(cert))
    _write_key(key_path, key)
    return cert_path, key_path


def issue_serving_cert(pki: Pki, folder: Path, name: str, hosts: list[str]) -> tuple[Path, Path]:
    """A TLS serving certificate signed by the cluster CA, e.g. for a webhook the apiserver calls:
    its ``caBundle`` is then simply the cluster CA (``pki.ca_cert``)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = _cert(_name(name), key, ca_cert.subject, ca_key, server=True, sans=sans)
    cert_path, key_path = folder / f"{name}-serving.crt", folder / f"{name}-serving.key"
    cert_path.write_bytes(_pem(cert))
    _write_key(key_path, key)
    return cert_path, key_path


def _apiserver_sans(service_ip: str, extra_ips: Sequence[str]) -> list[x509.GeneralName]:
    ips = dict.fromkeys(["127.0.0.1", service_ip, *extra_ips])
    return [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
    ]


def _issue_apiserver_cert(pki: Pki, service_ip: str, extra_ips: Sequence[str]) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans = _apiserver_sans(service_ip, extra_ips)
    cert = _cert(_name("kube-apiserver"), key, ca_cert.subject, ca_key, server=True, sans=sans)
    pki.serving_cert.write_bytes(_pem(cert))
    _write_key(pki.serving_key, key)


def ensure_apiserver_ips(pki: Pki, service_ip: str, ips: Sequence[str]) -> None:
    """Reissue the apiserver's serving certificate when a kept PKI's lacks one of ``ips`` (a
    local cluster restarted with a real node binds the apiserver to that node's link)."""
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        have = set()
    if not set(ips) <= have:
        _issue_apiserver_cert(pki, service_ip, list(ips))


def create_pki(folder: Path, service_ip: str, extra_ips: Sequence[str] = ()) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kaito-local-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = Pki.in_folder(folder)
    pki.ca_cert.write_bytes(_pem(ca))
    _write_key(pki.ca_key, ca_key)
    _issue_apiserver_cert(pki, service_ip, extra_ips)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    issue_client_cert(pki, folder, "kaito-admin", ["system:masters"])
    return pki
