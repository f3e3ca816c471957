"""The certificate controller's rules, without a cluster: issue, keep, rotate, CA overlap."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509

from kaito.operator.certs import CertOptions, CertState, new_ca, new_serving_cert, plan


def leaf(state: CertState) -> x509.Certificate:
    return x509.load_pem_x509_certificate(state.cert_pem)


def test_first_plan_issues_a_ca_and_a_serving_cert_for_the_service_names() -> None:
    opts = CertOptions(namespace="ns", service_name="svc", extra_hosts=("127.0.0.1",))
    state, wait = plan(CertState(), opts)
    cert = leaf(state)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) >= {"svc.ns.svc", "svc.ns.svc.cluster.local"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert 0 < wait <= opts.cert_validity * 2 / 3
    # A plan of a fresh state changes nothing.
    again, _ = plan(state, opts)
    assert again == state


def test_pair_verifies_against_the_bundle(tmp_path: Path) -> None:
    state, _ = plan(CertState(), CertOptions())
    (tmp_path / "ca.crt").write_bytes(state.bundle)
    (tmp_path / "tls.crt").write_bytes(state.cert_pem)
    (tmp_path / "tls.key").write_bytes(state.key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")  # the pair matches
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert client.cert_store_stats()["x509_ca"] == 1


def test_short_lived_serving_cert_is_due_after_two_thirds_and_rotates_under_the_same_ca() -> None:
    opts = CertOptions(cert_validity=60)
    state, wait = plan(CertState(), opts)
    assert 30 < wait < 45  # 2/3 of (60 s + a 6 s backdate), counted from now
    ca_pem, ca_key = state.ca_pem, state.ca_key_pem
    old_pem, old_key = new_serving_cert(ca_pem, ca_key, opts.hosts, 60)
    # Later in its life (a rotate fraction near 1 makes "now" past the due date).
    rotated, _ = plan(
        CertState(ca_pem, ca_key, old_pem, old_key), CertOptions(cert_validity=60, rotate_fraction=0.999)
    )
    assert rotated.ca_pem == ca_pem and rotated.cert_pem != old_pem
    assert leaf(rotated).issuer == x509.load_pem_x509_certificate(ca_pem).subject


def test_ca_rotation_keeps_the_old_ca_in_the_bundle_until_it_expires() -> None:
    old_ca, old_key = new_ca(validity=30)
    opts = CertOptions(rotate_fraction=0.99)
    state, _ = plan(CertState(old_ca, old_key), opts)
    cas = x509.load_pem_x509_certificates(state.bundle)
    assert len(cas) == 2 and cas[1].serial_number == x509.load_pem_x509_certificate(old_ca).serial_number
    assert leaf(state).issuer == cas[0].subject and state.ca_key_pem != old_key


def test_hosts_change_reissues() -> None:
    state, _ = plan(CertState(), CertOptions())
    moved, _ = plan(state, CertOptions(service_name="other"))
    assert moved.cert_pem != state.cert_pem and moved.ca_pem == state.ca_pem
    assert leaf(moved).not_valid_after_utc > dt.datetime.now(dt.UTC)
