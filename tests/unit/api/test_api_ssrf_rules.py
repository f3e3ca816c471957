"""The SSRF rules of kaito.contract.urls in every spelling a resolver accepts (issue 14, suite 7
runs them end to end; these keep the rules themselves in the fast unit suite)."""

from __future__ import annotations

import ipaddress

import pytest

from kaito.contract.urls import as_ip, image_host_problem, url_problem


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
