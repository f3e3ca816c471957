"""The SSRF rules of kaito.contract.urls in every spelling a resolver accepts (issue 14, suite 7
runs them end to end; these keep the rules themselves in the fast unit suite)."""

from __future__ import annotations

import ipaddress

import pytest

from kaito.contract.urls import as_ip, image_host_problem, redact_url, redact_urls, url_problem


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # one octal number: what the C resolver reads
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
    ],
)
def test_every_spelling_of_an_address_is_read_as_that_address(host: str, address: str) -> None:
    assert as_ip(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "deadbeef", "99999999999", "08"])
def test_names_and_impossible_numbers_are_not_addresses(host: str) -> None:
    assert as_ip(host) is None


@pytest.mark.parametrize("url", ["http://017700000001/x", "http://0x7f.1/x", "http://[::1]/x"])
def test_loopback_urls_are_refused(url: str) -> None:
    assert "loopback" in (url_problem(url) or "")


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("127.0.0.1:5000/adapter:1", "loopback"),
        ("localhost:5000/adapter:1", "loopback"),
        ("[::1]:5000/adapter:1", "loopback"),
        ("0x7f000001:5000/adapter:1", "loopback"),
        ("169.254.169.254/adapter:1", "metadata"),
        ("metadata.google.internal/adapter:1", "metadata"),
        ("[fe80::1]:5000/adapter:1", "link-local"),
    ],
)
def test_images_from_the_nodes_inside_are_refused(image: str, why: str) -> None:
    assert why in (image_host_problem(image) or "")


@pytest.mark.parametrize(
    "image",
    ["nginx:1", "library/nginx", "myreg.azurecr.io/adapters/phi-3:0.1", "10.0.0.5:5000/a:1", "2130706433/a"],
)
def test_ordinary_and_private_registries_pass(image: str) -> None:
    assert image_host_problem(image) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://acct.blob.core.windows.net/c/train.parquet?sv=2024&sig=AbC%2Bd%3D",
            "https://acct.blob.core.windows.net/c/train.parquet?REDACTED",
        ),
        (
            "https://b.s3.amazonaws.com/d.jsonl?X-Amz-Credential=AKIA&X-Amz-Signature=deadbeef",
            "https://b.s3.amazonaws.com/d.jsonl?REDACTED",
        ),
        ("https://user:pw@host:8443/p?t=1#frag", "https://REDACTED@host:8443/p?REDACTED#REDACTED"),
        ("https://huggingface.co/d/train.parquet", "https://huggingface.co/d/train.parquet"),
        ("http://[bad/x?sig=1", "http://[bad/x?REDACTED"),
        ("http://u:p@[bad/x", "http://REDACTED@[bad/x"),
    ],
)
def test_redact_url_keeps_host_and_path_only(url: str, shown: str) -> None:
    """Issue 21 hole 8: presigned URLs carry their credential in the query string."""
    assert redact_url(url) == shown
    assert redact_url(shown) == shown


def test_redact_urls_in_text_keeps_the_sentence() -> None:
    line = (
        "kaito-tuning: https://a.blob.core.windows.net/c/x.parquet?sig=S3CRET: HTTP 403 Forbidden; "
        "fetched 'http://h/y.jsonl?X-Amz-Signature=S3CRET' (see https://h/z?k=S3CRET)."
    )
    out = redact_urls(line)
    assert "S3CRET" not in out
    assert out == (
        "kaito-tuning: https://a.blob.core.windows.net/c/x.parquet?REDACTED: HTTP 403 Forbidden; "
        "fetched 'http://h/y.jsonl?REDACTED' (see https://h/z?REDACTED)."
    )
    assert redact_urls(out) == out


def test_url_problem_does_not_echo_the_signature() -> None:
    problem = url_problem("http://169.254.169.254/latest?sig=S3CRET")
    assert problem is not None and "S3CRET" not in problem and "169.254.169.254/latest?REDACTED" in problem
