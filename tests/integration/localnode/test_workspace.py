"""The seed's story on a local node, with the node made on demand: the README's inference
Workspace applied verbatim to a cluster with no node for it; `kaito controller` runs as `make run`
runs it (gpu-provisioner backend, kaito's node-provisioner in the same process, kwok cloud with
`--local-nodes`), so the Workspace gets a NodeClaim, the kwok cloud makes a Node labelled for the
local node agent (and kwok leaves it alone), the agent runs its pod `python -m kaito.inference`
for real (vLLM on CPU, a random-weight Phi-3 stand-in), the Workspace goes Ready, and `/chat`
and `/v1/chat/completions` (the official openai client) answer through `kaito local
port-forward`.

One vLLM start for the whole module: the Workspace is created once and every test reads it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conftest import REPO, AgentProcess, wait_for
from kaito.envtest import Cluster
from kaito.localnode import AGENT_NODE_LABEL, AGENT_NODE_VALUE, STANDIN_ANNOTATION
from kaito.localnode.sandbox import NETWORK
from kaito.runtime import GVK, NODE, POD, Client, NotFoundError

WORKSPACE = GVK("kaito.sh", "v1alpha1", "Workspace")
NODECLAIM = GVK("karpenter.sh", "v1", "NodeClaim")
SEED = REPO / "examples" / "inference" / "kaito_workspace_phi_3.yaml"
CLI = [sys.executable, "-m", "kaito.cli.main"]
#: vLLM's first start compiles; on 2 shared cores that can take minutes.
READY_TIMEOUT = 1200.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 120) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def seed_namespace() -> str:
    return f"seed-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def controller(
    kube_cluster: Cluster, seed_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """`kaito controller` as `make run` starts it; only this module's claims get local nodes (the
    selector names its namespace), so claims left by other tests stay on kwok."""
    for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
        if crd.name != "kustomization.yaml":
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "crd/nodeclaims.karpenter.sh",
        "--timeout=60s",
    )  # fmt: skip
    log = tmp_path_factory.mktemp("controller") / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "controller", "--kubeconfig", str(kube_cluster.kubeconfig),
             "--node-provisioner", "gpu-provisioner", "--node-provisioner-cloud", "kwok",
             "--local-nodes", f"kaito.sh/workspacenamespace={seed_namespace}",
             "--metrics-bind-address", "0", "--health-probe-bind-address", f"127.0.0.1:{_free_port()}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(60)


async def _claims(client: Client, ns: str) -> list[dict[str, Any]]:
    return await client.list(NODECLAIM, label_selector={"kaito.sh/workspacenamespace": ns}, cached=False)


@pytest.fixture(scope="module")
async def seed(
    kube_cluster: Cluster, agent: AgentProcess, controller: None, seed_namespace: str
) -> AsyncIterator[dict[str, str]]:
    """The seed Workspace Ready on a node made for it on demand; the namespace, claim and node."""
    ns = seed_namespace
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        assert await _claims(client, ns) == []  # no node exists for it beforehand
        await asyncio.to_thread(kube_cluster.kubectl, "apply", "-n", ns, "-f", str(SEED))

        async def ready() -> bool:
            ws = await client.get(WORKSPACE, "workspace-phi-3-mini", ns)
            conds = {c["type"]: c["status"] for c in ws.get("status", {}).get("conditions") or []}
            return conds.get("WorkspaceReady") == "True"

        await wait_for(ready, "WorkspaceReady True", timeout=READY_TIMEOUT, interval=2)
        claims = await _claims(client, ns)
        assert len(claims) == 1, [c["metadata"]["name"] for c in claims]
        claim = claims[0]["metadata"]["name"]
        node = claims[0]["status"]["nodeName"]
        yield {"namespace": ns, "node": node, "claim": claim}
        # The controller serves the claim's finalizer: wait for claim and node to go before it stops.
        await asyncio.to_thread(kube_cluster.kubectl, "delete", "-n", ns, "-f", str(SEED), "--wait=false")

        async def gone() -> bool:
            if await _claims(client, ns):
                return False
            try:
                await client.get(NODE, node, cached=False)
            except NotFoundError:
                return True
            return False

        await wait_for(gone, "the claim and its node deleted with the Workspace", timeout=180, interval=1)


@pytest.fixture(scope="module")
async def forwarded(seed: dict[str, str], agent: AgentProcess) -> AsyncIterator[str]:
    """`kaito local port-forward svc/workspace-phi-3-mini PORT:80`; yields the base URL."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "local", "port-forward", "svc/workspace-phi-3-mini", f"{port}:80", "-n", seed["namespace"],
        "--kubeconfig", str(agent.kubeconfig),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    await wait_for(lambda: _health_ok(url), "port-forward to /health", timeout=60)
    yield url
    proc.terminate()
    await proc.wait()


def _health_ok(url: str) -> bool:
    try:
        return _http("GET", f"{url}/health", timeout=5)[0] == 200
    except OSError:
        return False


async def test_node_was_made_on_demand_for_the_local_agent(
    seed: dict[str, str], kube_cluster: Cluster
) -> None:
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        claim = await client.get(NODECLAIM, seed["claim"], cached=False)
        node = await client.get(NODE, seed["node"], cached=False)
    conds = {c["type"]: c["status"] for c in claim["status"]["conditions"]}
    assert all(conds.get(t) == "True" for t in ("Launched", "Registered", "Initialized", "Ready")), conds
    assert claim["status"]["providerID"] == f"kwok://{seed['claim']}" == node["spec"]["providerID"]
    labels = node["metadata"]["labels"]
    assert labels[AGENT_NODE_LABEL] == AGENT_NODE_VALUE  # the agent's node ...
    assert "type" not in labels  # ... which kwok leaves alone
    assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})
    assert labels["kaito.sh/kwok-cloud"] == "true" and labels["apps"] == "phi-3"
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and "kaito local node agent" in ready["message"], ready
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"


async def test_pod_runs_kaito_inference_on_the_local_node(
    seed: dict[str, str], kube_cluster: Cluster, agent: AgentProcess
) -> None:
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        pod = await client.get(POD, "workspace-phi-3-mini-0", seed["namespace"])
    assert pod["spec"]["nodeName"] == seed["node"]
    assert pod["spec"]["containers"][0]["command"][:3] == ["python", "-m", "kaito.inference"]
    assert ipaddress.ip_address(pod["status"]["podIP"]) in NETWORK
    assert STANDIN_ANNOTATION in pod["metadata"]["annotations"]
    logs = await asyncio.create_subprocess_exec(
        *CLI, "local", "logs", "workspace-phi-3-mini-0", "-n", seed["namespace"],
        "--state-dir", str(agent.root),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out = (await logs.communicate())[0].decode(errors="replace")
    assert "random-weight stand-in" in out  # the startup log says so


async def test_chat_answers_through_port_forward(forwarded: str) -> None:
    status, body = await asyncio.to_thread(
        _http,
        "POST",
        f"{forwarded}/chat",
        {"prompt": "What is Kubernetes?", "generate_kwargs": {"max_length": 32}},
    )
    assert status == 200
    assert isinstance(body["Result"], str) and body["Result"].strip()


async def test_openai_client_chat_completions(forwarded: str) -> None:
    code = (
        "import sys; from openai import OpenAI; "
        "c = OpenAI(base_url=sys.argv[1] + '/v1', api_key='none'); "
        "r = c.chat.completions.create(model='phi-3-mini-4k-instruct', "
        "messages=[{'role': 'user', 'content': 'Say hello'}], max_tokens=16); "
        "print(r.choices[0].message.content is not None, r.usage.completion_tokens)"
    )
    python = REPO / ".venv-inference" / "bin" / "python"
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", code, forwarded, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    ok, tokens = out.decode().split()
    assert ok == "True" and int(tokens) > 0


async def test_stand_in_is_labelled_on_health_and_models(forwarded: str) -> None:
    _, health = await asyncio.to_thread(_http, "GET", f"{forwarded}/health")
    assert "random-weight stand-in" in health["weights"]
    _, models = await asyncio.to_thread(_http, "GET", f"{forwarded}/v1/models")
    ids = {m["id"] for m in models["data"]}
    assert "phi-3-mini-4k-instruct" in ids
    assert "phi-3-mini-4k-instruct-random-weight-stand-in" in ids
