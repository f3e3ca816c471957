"""Suite 7 (issue 14): security checks.

* Server-side request forgery: tuning URLs and adapter/tuning images may not aim at loopback,
  link-local or cloud metadata addresses, in any spelling; and the dataset downloader resolves a
  name once and connects to the address it checked, so a DNS answer that changes between the
  check and the connection (rebinding) cannot reach an inside address. The names go through
  glibc's resolver to a real DNS server on loopback that answers differently on its second
  lookup (the downloader runs in a mount namespace whose resolv.conf names that server).
* Pod security of the controller as shipped (config/manager and the rendered Helm chart).
* No Secret value (an HF token, a registry password) in anything the real operator produced:
  its log (DEBUG), Events, Workspace status, every other object it wrote, its metrics, and the
  control plane's logs.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from rel_support import REPO, LogCapture, fresh_namespace, running_operator, until
from reliability_stack import emit

from kaito.api.workspace.validation import validate_workspace
from kaito.contract.urls import image_host_problem, url_problem
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import GVK, Client, NotFoundError

LOOPBACK = ipaddress.ip_address("127.0.0.1")
#: The suite's one figures line, filled by each check and emitted when the module ends.
FIGURES: dict[str, Any] = {"suite": "security"}


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if len(FIGURES) > 1:
        emit(FIGURES)


INSIDE_URLS = [
    "http://127.0.0.1/x",
    "http://127.1/x",
    "http://0x7f000001/x",
    "http://2130706433/x",
    "http://017700000001/x",
    "http://0177.0.0.1/x",
    "http://localhost:8080/x",
    "http://LOCALHOST./x",
    "http://sub.localhost/x",
    "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest",
    "http://[::ffff:a9fe:a9fe]/latest",
    "http://0xa9fea9fe/latest",
    "http://2852039166/latest",
    "http://0251.0376.0251.0376/latest",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.azure.com./metadata/instance",
    "http://100.100.100.200/latest",
    "http://169.254.1.1/x",
    "http://[fe80::1]/x",
    "http://user:pw@127.0.0.1/x",
    "http://example.com@127.0.0.1/x",
    "https://10.0.0.7/data.parquet",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
]
INSIDE_IMAGES = [
    "127.0.0.1:5000/adapter:1",
    "localhost:5000/adapter:1",
    "localhost/adapter:1",
    "[::1]:5000/adapter:1",
    "169.254.169.254/adapter:1",
    "169.254.169.254:80/adapter:1",
    "metadata.google.internal/adapter:1",
    "0x7f000001:5000/adapter:1",
    "[fe80::1]:5000/adapter:1",
    "0.0.0.0:5000/adapter:1",
]


def _tuning_ws(urls: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ssrf"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "tuning": {
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "method": "qlora",
            "input": {"urls": urls},
            "output": {"image": "example.azurecr.io/out:0.1", "imagePushSecret": "push"},
        },
    }


def _adapter_ws(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ssrf"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "image": image}, "strength": "1.0"}],
        },
    }


def test_inside_urls_and_images_are_refused_in_every_spelling() -> None:
    for url in INSIDE_URLS:
        assert url_problem(url), f"{url} was not refused"
        result = validate_workspace(_tuning_ws([url]))
        fields = [e.field for e in result.errors]
        assert "tuning.input.urls[0]" in fields, f"{url}: {result.errors}"
    for image in INSIDE_IMAGES:
        assert image_host_problem(image), f"{image} was not refused"
        result = validate_workspace(_adapter_ws(image))
        fields = [e.field for e in result.errors]
        assert "inference.adapters[0].source.image" in fields, f"{image}: {result.errors}"
    # and the ordinary places still pass
    assert url_problem("https://huggingface.co/datasets/x/resolve/main/a.parquet") is None
    for image in ("myreg.azurecr.io/adapters/phi-3:0.1", "10.0.0.5:5000/a:1", "nginx:1", "ghcr.io/a/b:1"):
        assert image_host_problem(image) is None, image
    assert validate_workspace(_adapter_ws("myreg.azurecr.io/adapters/phi-3:0.1")).ok


# --------------------------------------------------------------------------- DNS rebinding


class _Data(http.server.BaseHTTPRequestHandler):
    """The data source: a file at any path, and ``/redirect/<key>`` answering 302 to
    ``redirects[key]``."""

    hits: list[str] = []
    redirects: dict[str, str] = {}

    def do_GET(self) -> None:
        type(self).hits.append(f"{self.headers.get('Host')} {self.path}")
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", type(self).redirects[self.path.removeprefix("/redirect/")])
            self.end_headers()
            return
        body = b'{"messages": []}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def data_server() -> Iterator[tuple[int, type[_Data]]]:
    handler = type("Data", (_Data,), {"hits": [], "redirects": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1]), handler
    finally:
        httpd.shutdown()
        httpd.server_close()


#: Where the rebinding name server listens. resolv.conf cannot name a port, so it is port 53 on
#: a loopback address of its own (nothing else on the machine uses 127.0.0.77).
DNS_ADDRESS = "127.0.0.77"


class RebindingDNS:
    """A real DNS server (UDP, RFC 1035 wire format) that answers A queries for some names
    differently from one lookup to the next, as a rebinding attacker's server does. AAAA queries
    get an empty answer, unknown names NXDOMAIN. TTL 0: nothing may cache an answer."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        #: A queries seen per name: one per getaddrinfo call.
        self.lookups: dict[str, int] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_ADDRESS, 53))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RebindingDNS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            with contextlib.suppress(IndexError, ValueError):
                self.sock.sendto(self._answer(query), peer)

    def _answer(self, query: bytes) -> bytes:
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1 : at + 1 + query[at]].decode("ascii").lower())
            at += 1 + query[at]
        qtype = int.from_bytes(query[at + 1 : at + 3], "big")
        question = query[12 : at + 5]
        name = ".".join(labels)
        flags = 0x8480 | (int.from_bytes(query[2:4], "big") & 0x0100)  # QR AA RA, RD echoed
        if name not in self.answers:
            header = query[:2] + (flags | 3).to_bytes(2, "big") + b"\x00\x01" + b"\x00" * 6
            return header + question
        records = b""
        count = 0
        if qtype == 1:
            n = self.lookups.get(name, 0)
            self.lookups[name] = n + 1
            for addr in self.answers[name][min(n, len(self.answers[name]) - 1)]:
                records += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04" + socket.inet_aton(addr)
                count += 1
        header = query[:2] + flags.to_bytes(2, "big") + b"\x00\x01" + count.to_bytes(2, "big") + b"\x00" * 4
        return header + question + records


#: Runs in a mount namespace whose /etc/resolv.conf names only the rebinding server, so the
#: downloader's own getaddrinfo goes through glibc's real stub resolver to it.
_FETCHER = r"""
import ipaddress, json, sys
from pathlib import Path
from kaito.tuning.errors import TuningError
from kaito.tuning.fetch import FetchOptions, fetch_one
out, urls = Path(sys.argv[1]), json.loads(sys.argv[2])
opts = FetchOptions(allow_addresses=frozenset({ipaddress.ip_address("127.0.0.1")}), timeout_s=10)
results = []
for i, url in enumerate(urls):
    try:
        results.append({"bytes": fetch_one(url, out / f"{i}.jsonl", opts)})
    except TuningError as exc:
        results.append({"error": str(exc)})
print(json.dumps(results))
"""


def _fetch_with_dns(tmp_path: Path, urls: list[str]) -> list[dict[str, Any]]:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {DNS_ADDRESS}\noptions timeout:2 attempts:2 ndots:0\n")
    (etc / "nsswitch.conf").write_text("hosts: dns\n")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    script = (
        'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf && shift 2 && exec "$@"'
    )
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            str(etc / "resolv.conf"),
            str(etc / "nsswitch.conf"),
            sys.executable,
            "-c",
            _FETCHER,
            str(out),
            json.dumps(urls),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"the fetcher in its own mount namespace failed (needs root):\n{proc.stderr}"
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def test_dataset_download_resolves_once_and_connects_to_the_checked_address(
    tmp_path: Path, data_server: tuple[int, type[_Data]]
) -> None:
    """Loopback stands in for a public address here (``allow_addresses``, as the tuning tests
    do); the metadata address is the inside one a second lookup would have returned. The names
    are resolved by glibc through a real DNS server whose answers change between lookups."""
    port, handler = data_server
    handler.redirects = {
        "hop": f"http://hop.test:{port}/d.jsonl",
        "literal": "http://169.254.169.254/latest/meta-data/",
    }
    answers = {
        "rebind.test": [["127.0.0.1"], ["169.254.169.254"]],  # good first, inside after
        "inside-first.test": [["169.254.169.254"], ["127.0.0.1"]],  # inside first, good after
        "mixed.test": [["127.0.0.1", "10.0.0.9"]],  # any inside answer refuses the name
        "hop.test": [["169.254.169.254"]],
        "start.test": [["127.0.0.1"]],
    }
    with RebindingDNS(answers) as dns:
        results = _fetch_with_dns(
            tmp_path,
            [
                f"http://rebind.test:{port}/a.jsonl",
                f"http://inside-first.test:{port}/b.jsonl",
                f"http://mixed.test:{port}/c.jsonl",
                f"http://start.test:{port}/redirect/hop",
                f"http://start.test:{port}/redirect/literal",
            ],
        )
    fetched, inside_first, mixed, hop, literal = results

    # 1. the check saw 127.0.0.1 and the connection went there: one lookup, the real server hit
    assert fetched.get("bytes", 0) > 0 and dns.lookups["rebind.test"] == 1, (fetched, dns.lookups)
    assert handler.hits[0] == f"rebind.test:{port} /a.jsonl", handler.hits

    # 2. an inside answer is refused before any connection
    assert "169.254.169.254" in inside_first.get("error", ""), inside_first
    assert "10.0.0.9" in mixed.get("error", ""), mixed
    assert dns.lookups["inside-first.test"] == 1, dns.lookups

    # 3. a redirect to a name that resolves inside, or to an inside literal, is refused too
    assert "169.254.169.254" in hop.get("error", "") and "169.254.169.254" in literal.get("error", ""), (
        results
    )
    assert handler.hits[1:] == [f"start.test:{port} /redirect/hop", f"start.test:{port} /redirect/literal"], (
        handler.hits  # the hops themselves were never requested
    )
    assert not list((tmp_path / "out").glob("[34].jsonl*"))
    FIGURES.update(
        {
            "inside_urls_refused": len(INSIDE_URLS),
            "inside_images_refused": len(INSIDE_IMAGES),
            "rebinding_cases": 5,
            "dns_lookups_per_download": dns.lookups["rebind.test"],
        }
    )


# --------------------------------------------------------------------------- pod security


def _helm_objects() -> list[dict[str, Any]]:
    from kaito.envtest.assets import K8S_VERSION
    from kaito.envtest.helm import ensure_helm

    helm = str(ensure_helm())
    out: list[dict[str, Any]] = []
    for sets in ([], ["nodeProvisionerController.enabled=true", "webhook.certs=cert-manager"]):
        cmd = [helm, "template", "kaito", str(REPO / "charts" / "kaito"), "-n", "kaito-system"]
        cmd += ["--set", "image.repository=localhost:5000/kaito/workspace"]  # required: no published image
        cmd += ["--kube-version", K8S_VERSION]
        for s in sets:
            cmd += ["--set", s]
        rendered = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
        out += [d for d in yaml.safe_load_all(rendered) if d]
    return out


def _kustomize_objects() -> list[dict[str, Any]]:
    folder = REPO / "config" / "manager"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for res in kustomization["resources"]:
        out += [d for d in yaml.safe_load_all((folder / res).read_text()) if d]
    return out


def _pod_problems(where: str, pod: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if psc.get("runAsUser") in (0, None):
        problems.append(f"{where}: pod securityContext.runAsUser is {psc.get('runAsUser')!r}")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{where}: {key} is set")
    problems += [f"{where}: hostPath volume {v['name']}" for v in pod.get("volumes") or [] if "hostPath" in v]
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        sc = c.get("securityContext") or {}
        name = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            problems.append(f"{name}: adds capabilities")
    return problems


def test_controller_pod_security_as_shipped() -> None:
    deployments = 0
    problems: list[str] = []
    for source, objs in (("config/manager", _kustomize_objects()), ("charts/kaito", _helm_objects())):
        for obj in objs:
            if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
                deployments += 1
                where = f"{source} {obj['kind']}/{obj['metadata']['name']}"
                problems += _pod_problems(where, obj["spec"]["template"]["spec"])
    assert deployments >= 2, deployments
    assert not problems, "\n".join(problems)
    FIGURES.update({"workloads_checked": deployments, "pod_security_problems": 0})


# --------------------------------------------------------------------------- Secret values

HF_TOKEN = "hf_PlantedSecretToken_" + "7c1d2e9a5b"
REGISTRY_PASSWORD = "Planted-Registry-Password-" + "4f8e21"
SECRET_VALUES = (HF_TOKEN, REGISTRY_PASSWORD)


def _forms(value: str) -> list[str]:
    """The value and the encodings it would appear in if copied out of a Secret."""
    b64 = base64.b64encode(value.encode()).decode()
    return [value, b64, b64.rstrip("="), json.dumps(value)[1:-1]]


def _leaks(label: str, text: str) -> list[str]:
    return [f"{label} contains {form[:12]}..." for v in SECRET_VALUES for form in _forms(v) if form in text]


@pytest.mark.cluster
async def test_no_secret_value_in_logs_events_status_objects_or_metrics(reliability_cluster: Cluster) -> None:
    async with fresh_namespace(reliability_cluster, "secrets") as ns:
        await _no_secret_value(reliability_cluster, ns)


async def _no_secret_value(kube_cluster: Cluster, ns: str) -> None:
    start = time.monotonic()
    registry_auth = base64.b64encode(f"robot:{REGISTRY_PASSWORD}".encode()).decode()
    entry = {"username": "robot", "password": REGISTRY_PASSWORD, "auth": registry_auth}
    dockercfg = json.dumps({"auths": {"example.azurecr.io": entry}})
    label = f"sec-{ns[-6:]}"
    async with Client(kube_cluster.client_configuration()) as api:
        await api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "hf-token", "namespace": ns},
                "stringData": {"HF_TOKEN": HF_TOKEN},
            }
        )
        await api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "regcred", "namespace": ns},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": dockercfg},
            }
        )
        node = f"gpu-{label}"
        await api.create(gpu_node_manifest(node, "Standard_NC6s_v3", {"apps": label}))
        inference = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "gated", "namespace": ns},
            "resource": {
                "instanceType": "Standard_NC6s_v3",
                "labelSelector": {"matchLabels": {"apps": label}},
            },
            "inference": {
                "preset": {
                    "name": "phi-3-mini-4k-instruct",
                    "presetOptions": {"modelAccessSecret": "hf-token", "imagePullSecrets": ["regcred"]},
                },
                "adapters": [
                    {
                        "source": {
                            "name": "private-adapter",
                            "image": "example.azurecr.io/adapters/a:0.1",
                            "imagePullSecrets": ["regcred"],
                        },
                        "strength": "1.0",
                    }
                ],
            },
        }
        tuning = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "tune", "namespace": ns},
            "resource": {
                "instanceType": "Standard_NC6s_v3",
                "labelSelector": {"matchLabels": {"apps": f"{label}-t"}},
            },
            "tuning": {
                "preset": {"name": "phi-3-mini-4k-instruct"},
                "method": "qlora",
                "input": {"image": "example.azurecr.io/data:0.1", "imagePullSecrets": ["regcred"]},
                "output": {"image": "example.azurecr.io/out:0.1", "imagePushSecret": "regcred"},
            },
        }
        options = OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0", namespace=ns)
        try:
            with LogCapture("DEBUG") as logs:
                async with running_operator(kube_cluster.client_configuration(), options) as op:
                    await api.create(inference)
                    await api.create(tuning)

                    async def workload() -> bool:
                        sts = await api.list(GVK("apps", "v1", "StatefulSet"), ns, cached=False)
                        pods = await api.list(GVK("", "v1", "Pod"), ns, cached=False)
                        return bool(sts) and bool(pods)

                    await until(workload, "the inference workload and its pods", 240)
                    metrics_text = generate_latest(op.manager.metrics.registry).decode()
                    produced = await _everything_in(api, ns)
                    for name in ("gated", "tune"):
                        with contextlib.suppress(NotFoundError):
                            await api.delete(WORKSPACE, name, ns)

                    async def gone() -> bool:
                        return not await api.list(WORKSPACE, ns, cached=False)

                    await until(gone, "the Workspaces to be finalized", 120)
        finally:
            with contextlib.suppress(NotFoundError):
                await api.delete(GVK("", "v1", "Node"), node)
    # the planted values really are in the cluster (the grep below is not vacuous)
    assert any(v in json.dumps(produced["Secret"]) for v in _forms(HF_TOKEN))
    leaks: list[str] = []
    leaks += _leaks("operator log", logs.text())
    leaks += _leaks("metrics", metrics_text)
    for kind, objs in produced.items():
        if kind != "Secret":
            leaks += _leaks(kind, json.dumps(objs))
    control_plane_lines = 0
    for log in sorted((kube_cluster.workdir / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        control_plane_lines += text.count("\n")
        leaks += _leaks(log.name, text)
    assert not leaks, leaks
    assert "caches synced" in logs.text(), "the operator's log was not captured"
    FIGURES.update(
        {
            "secret_values_planted": len(SECRET_VALUES),
            "operator_log_lines": logs.text().count("\n"),
            "control_plane_log_lines": control_plane_lines,
            "objects_grepped": sum(len(v) for k, v in produced.items() if k != "Secret"),
            "leaks": 0,
            "secrets_seconds": round(time.monotonic() - start, 1),
        }
    )


async def _everything_in(api: Client, ns: str) -> dict[str, list[dict[str, Any]]]:
    kinds = {
        "Secret": GVK("", "v1", "Secret"),
        "Workspace": WORKSPACE,
        "Event": GVK("", "v1", "Event"),
        "EventsV1": GVK("events.k8s.io", "v1", "Event"),
        "Pod": GVK("", "v1", "Pod"),
        "Service": GVK("", "v1", "Service"),
        "ConfigMap": GVK("", "v1", "ConfigMap"),
        "StatefulSet": GVK("apps", "v1", "StatefulSet"),
        "Deployment": GVK("apps", "v1", "Deployment"),
        "ControllerRevision": GVK("apps", "v1", "ControllerRevision"),
        "Job": GVK("batch", "v1", "Job"),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for name, gvk in kinds.items():
        out[name] = await api.list(gvk, ns, cached=False)
    out["Node"] = await api.list(GVK("", "v1", "Node"), cached=False)
    return out
