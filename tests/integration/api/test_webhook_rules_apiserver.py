"""Upstream Kaito's admission rules (issue 15 item 4) through the real kube-apiserver.

The webhook runs with a real :class:`kaito.runtime.Client`, as the operator runs it, so the
inference ConfigMap rule reads the ConfigMap the apiserver holds. kubectl talks to the apiserver,
which calls the webhook over TLS; the messages asserted are the ones a kubectl user sees.
Upstream's own example Workspaces and ConfigMaps (tests/data/upstream) go through unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from workspace_webhooks import workspace_webhooks

from kaito.api.webhook import new_webhook_server
from kaito.envtest import Cluster
from kaito.runtime import Client, WebhookServerOptions

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = ROOT / "tests" / "data" / "upstream"


@dataclass
class Hooked:
    namespace: str
    #: Register (True) or remove (False) the mutating webhook and wait until the apiserver acts
    #: on it (its webhook configuration is read through an informer, so not at once).
    defaulting: Callable[[bool], Awaitable[None]]
    run: Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


@pytest.fixture
async def hooked(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> AsyncIterator[Hooked]:
    for f in sorted((ROOT / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in f.read_text():
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/workspaces.kaito.sh")
    cert, key = kube_cluster.serving_cert("kaito-webhook")
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copyfile(cert, cert_dir / "tls.crt")
    shutil.copyfile(key, cert_dir / "tls.key")
    client = Client(kube_cluster.client_configuration(), field_manager="kaito-webhook-test")
    server = new_webhook_server(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(cert_dir)), client=client
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    async with asyncio.timeout(30):
        await server.wait_started()
    port = server.bound_port
    assert kube_cluster.pki is not None
    ca_bundle = base64.b64encode(kube_cluster.pki.ca_cert.read_bytes()).decode()

    def hooks(verb: str) -> list[dict[str, Any]]:
        return workspace_webhooks(verb, port, ca_bundle, namespace)

    validating = f"kaito-rules-validate-{namespace}"
    mutating = f"kaito-rules-mutate-{namespace}"

    def set_defaulting(on: bool) -> None:
        if on:
            config = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": mutating},
                "webhooks": hooks("mutate"),
            }
            kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        else:
            kube_cluster.kubectl("delete", "mutatingwebhookconfiguration", mutating, "--ignore-not-found")

    async def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        # The webhook answers in this event loop, so kubectl runs in a thread.
        return await asyncio.to_thread(kube_cluster.kubectl, *args, "-n", namespace, input=input, check=False)

    async def defaulting(on: bool) -> None:
        set_defaulting(on)
        probe = workspace("probe-defaulting")
        probe["resource"]["instanceType"] = "standard_nc24ads_a100_v4"
        async with asyncio.timeout(60):
            while True:
                made = await run("create", "-o", "json", "-f", "-", input=json.dumps(probe))
                assert made.returncode == 0, made.stderr
                await run("delete", "workspace", "probe-defaulting", "--wait=false")
                stored = json.loads(made.stdout)["resource"]["instanceType"]
                if (stored == "Standard_NC24ads_A100_v4") == on:
                    return
                await asyncio.sleep(0.5)

    async def validating_active() -> None:
        bad = workspace("probe-validating")
        bad["inference"]["preset"]["name"] = "no-such-model"
        async with asyncio.timeout(60):
            while True:
                made = await run("create", "-f", "-", input=json.dumps(bad))
                if made.returncode != 0 and "unknown preset" in made.stderr:
                    return
                await run("delete", "workspace", "probe-validating", "--ignore-not-found")
                await asyncio.sleep(0.5)

    kube_cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": validating},
                "webhooks": hooks("validate"),
            }
        ),
    )
    try:
        await defaulting(True)
        await validating_active()
        yield Hooked(namespace, defaulting, run)
    finally:
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", validating, "--ignore-not-found")
        set_defaulting(False)
        stop.set()
        await asyncio.wait_for(task, 30)
        await client.close()


def workspace(name: str, **inference: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}, **inference},
    }


def config_map(name: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"inference_config.yaml": text},
    }


async def test_inference_config_map_is_read_from_the_cluster(hooked: Hooked) -> None:
    ws = json.dumps(workspace("with-config", config="my-config"))
    missing = await hooked.run("create", "-f", "-", input=ws)
    assert missing.returncode != 0
    ns = hooked.namespace
    assert f"inference.config: ConfigMap 'my-config' not found in namespace '{ns}'" in missing.stderr

    too_long = config_map("my-config", "vllm:\n  max-model-len: 262144\n")
    assert (await hooked.run("apply", "-f", "-", input=json.dumps(too_long))).returncode == 0
    refused = await hooked.run("create", "-f", "-", input=ws)
    assert refused.returncode != 0
    assert "vllm.max-model-len 262144 exceeds phi-4-mini-instruct's context window" in refused.stderr

    fixed = config_map("my-config", "vllm:\n  max-model-len: 8192\n")
    assert (await hooked.run("apply", "-f", "-", input=json.dumps(fixed))).returncode == 0
    made = await hooked.run("create", "-f", "-", input=ws)
    assert made.returncode == 0, made.stderr

    # Deleting the ConfigMap later does not wedge the Workspace: updates that keep the name pass.
    assert (await hooked.run("delete", "configmap", "my-config")).returncode == 0
    labelled = await hooked.run("label", "workspace", "with-config", "team=a")
    assert labelled.returncode == 0, labelled.stderr


async def test_upstream_examples_pass_the_webhook(hooked: Hooked) -> None:
    for name in ("tool-calling-inference-config.yaml", "qlora-params-template.yaml"):
        cm = yaml.safe_load((UPSTREAM / name).read_text())
        assert (await hooked.run("apply", "-f", "-", input=json.dumps(cm))).returncode == 0
    for path in sorted(UPSTREAM.glob("workspace-*.yaml")):
        if "arc" in path.name:
            continue  # an Arc SKU: the webhook here serves the azure SKU table
        applied = await hooked.run("apply", "-f", str(path))
        assert applied.returncode == 0, (path.name, applied.stderr)


async def test_new_rules_reject_and_accept_through_the_apiserver(hooked: Hooked) -> None:
    gated = workspace("gated")
    gated["inference"]["preset"] = {"name": "llama-3.1-8b-instruct"}
    refused = await hooked.run("create", "-f", "-", input=json.dumps(gated))
    assert refused.returncode != 0
    assert "inference.preset.presetOptions.modelAccessSecret: llama-3.1-8b-instruct" in refused.stderr
    assert "is gated" in refused.stderr
    gated["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    made = await hooked.run("create", "-f", "-", input=json.dumps(gated))
    assert made.returncode == 0, made.stderr

    annotated = workspace("annotated")
    annotated["metadata"]["annotations"] = {"kaito.sh/runtime": "tgi"}
    refused = await hooked.run("create", "-f", "-", input=json.dumps(annotated))
    assert refused.returncode != 0
    assert "metadata.annotations[kaito.sh/runtime]: 'tgi' is not a runtime" in refused.stderr

    adapters = workspace("adapted", adapters=[{"source": {"name": "a", "image": "https://r.io/a:1"}}])
    refused = await hooked.run("create", "-f", "-", input=json.dumps(adapters))
    assert refused.returncode != 0
    assert "inference.adapters[0].source.image: 'https://r.io/a:1' is not a valid image" in refused.stderr

    tuning = workspace("tune")
    del tuning["inference"]
    tuning["resource"]["count"] = 2
    tuning["tuning"] = {
        "preset": {"name": "phi-4-mini-instruct"},
        "method": "qlora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/out:1", "imagePushSecret": "push"},
    }
    refused = await hooked.run("create", "-f", "-", input=json.dumps(tuning))
    assert refused.returncode != 0 and "resource.count: tuning runs on a single node, got 2" in refused.stderr
    tuning["resource"]["count"] = 1
    tuning["tuning"]["config"] = "my-tuning"
    refused = await hooked.run("create", "-f", "-", input=json.dumps(tuning))
    assert refused.returncode != 0 and "tuning.config: ConfigMap 'my-tuning' not found" in refused.stderr
    del tuning["tuning"]["config"]
    made = await hooked.run("create", "-f", "-", input=json.dumps(tuning))
    assert made.returncode == 0, made.stderr
    patch = '{"tuning":{"method":"lora"}}'
    changed = await hooked.run("patch", "workspace", "tune", "--type=merge", "-p", patch)
    assert changed.returncode != 0 and "tuning.method: is immutable" in changed.stderr


async def test_defaulting_on_update_keeps_the_stored_instance_type(hooked: Hooked) -> None:
    # Stored before the defaulting webhook existed: lower case, as the user wrote it.
    await hooked.defaulting(False)
    ws = workspace("stored-lower")
    ws["resource"]["instanceType"] = "standard_nc24ads_a100_v4"
    made = await hooked.run("create", "-o", "json", "-f", "-", input=json.dumps(ws))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["resource"]["instanceType"] == "standard_nc24ads_a100_v4"
    await hooked.defaulting(True)

    # Re-applying the same manifest is an UPDATE; rewriting instanceType would trip immutability.
    again = await hooked.run("apply", "-f", "-", input=json.dumps(ws))
    assert again.returncode == 0, again.stderr
    # The SKU table's spelling of the same SKU is put back to the stored one, not refused.
    ws["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    ws["metadata"]["labels"] = {"team": "a"}
    respelled = await hooked.run("apply", "-o", "json", "-f", "-", input=json.dumps(ws))
    assert respelled.returncode == 0, respelled.stderr
    stored = json.loads(respelled.stdout)
    assert stored["resource"]["instanceType"] == "standard_nc24ads_a100_v4"
    assert stored["metadata"]["labels"] == {"team": "a"}
    # A real change is still refused.
    ws["resource"]["instanceType"] = "Standard_NC48ads_A100_v4"
    refused = await hooked.run("apply", "-f", "-", input=json.dumps(ws))
    assert refused.returncode != 0 and "instanceType" in refused.stderr and "immutable" in refused.stderr

    # CREATE still canonicalises.
    fresh = workspace("fresh-lower")
    fresh["resource"]["instanceType"] = "standard_nc24ads_a100_v4"
    made = await hooked.run("create", "-o", "json", "-f", "-", input=json.dumps(fresh))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["resource"]["instanceType"] == "Standard_NC24ads_A100_v4"


async def test_reserved_and_malformed_selector_labels_are_refused_at_kubectl_apply(hooked: Hooked) -> None:
    """Issue 21 holes 1 and 2: one ordinary key next to ``kaito.sh/workspace`` used to pass, and so
    did keys and values the apiserver refuses later on the NodeClaim (the Workspace then stuck on
    a 422). kubectl now gets the field and the fix, and nothing is stored."""
    sel = "resource.labelSelector"
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"matchLabels": {"apps": "mine", "kaito.sh/workspace": "victim"}},
            f"{sel}.matchLabels[\"kaito.sh/workspace\"]: 'kaito.sh/workspace' is under kaito.sh",
        ),
        (
            {"matchLabels": {"apps": "mine", "kaito.sh/workspacenamespace": "other-tenant"}},
            f"{sel}.matchLabels[\"kaito.sh/workspacenamespace\"]:",
        ),
        (
            {
                "matchLabels": {"apps": "mine"},
                "matchExpressions": [{"key": "karpenter.sh/nodepool", "operator": "Exists"}],
            },
            f"{sel}.matchExpressions[0].key: 'karpenter.sh/nodepool' is under karpenter.sh",
        ),
        (
            {"matchLabels": {"apps": "mine", "bad key!": "x"}},
            f"{sel}.matchLabels[\"bad key!\"]: 'bad key!' is not a valid label key",
        ),
        (
            {"matchLabels": {"apps": "a b,c"}},
            f"{sel}.matchLabels[\"apps\"]: 'a b,c' is not a valid label value",
        ),
        (
            {"matchExpressions": [{"key": "apps", "operator": "In"}]},
            f"{sel}.matchExpressions[0].values: must list at least one value for operator In",
        ),
    ]
    for i, (selector, expected) in enumerate(cases):
        ws = workspace(f"sel-{i}")
        ws["resource"]["labelSelector"] = selector
        for verb in ("apply", "create"):
            refused = await hooked.run(verb, "-f", "-", input=json.dumps(ws))
            assert refused.returncode != 0, (selector, refused.stdout)
            assert expected in refused.stderr, (selector, refused.stderr)
            assert "use a key of your own" in refused.stderr or "kaito.sh" not in expected
        stored = await hooked.run("get", "workspace", f"sel-{i}")
        assert stored.returncode != 0 and "NotFound" in stored.stderr, stored.stdout
    ok = workspace("sel-ok")
    ok["resource"]["labelSelector"] = {
        "matchLabels": {"apps": "mine", "example.com/team": ""},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}],
    }
    made = await hooked.run("apply", "-f", "-", input=json.dumps(ok))
    assert made.returncode == 0, made.stderr


async def test_hub_model_is_read_from_the_hub_with_the_secrets_token(
    hooked: Hooked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inference.preset.name: org/model`` through the real apiserver: the webhook reads the
    model on a fake Hub (``HF_ENDPOINT``), with the token of the Secret the Workspace names."""
    from hub_fake import PHI3_MINI_CONFIG, PHI3_MINI_FILES, fake_hub
    from kaito.api import hub

    def hub_ws(name: str, model: str, secret: str | None = None) -> str:
        preset: dict[str, Any] = {"name": model}
        if secret:
            preset["presetOptions"] = {"modelAccessSecret": secret}
        return json.dumps(workspace(name, preset=preset))

    with fake_hub() as fake:
        fake.add("acme/phi3-copy", PHI3_MINI_CONFIG, PHI3_MINI_FILES)
        fake.add("acme/gated", PHI3_MINI_CONFIG, PHI3_MINI_FILES, token="hf_ok")
        fake.add("acme/bert", {"architectures": ["BertForMaskedLM"], "num_hidden_layers": 12})
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        hub.clear_cache()

        ok = await hooked.run("create", "-f", "-", input=hub_ws("hub-ok", "acme/phi3-copy"))
        assert ok.returncode == 0, ok.stderr
        bert = await hooked.run("create", "-f", "-", input=hub_ws("hub-bert", "acme/bert"))
        assert bert.returncode != 0
        assert "inference.preset.name: acme/bert is a BertForMaskedLM model, which vLLM" in bert.stderr
        gated = await hooked.run("create", "-f", "-", input=hub_ws("hub-gated", "acme/gated"))
        assert gated.returncode != 0 and "set presetOptions.modelAccessSecret" in gated.stderr

        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf"},
            "stringData": {"HF_TOKEN": "hf_ok"},
        }
        assert (await hooked.run("apply", "-f", "-", input=json.dumps(secret))).returncode == 0
        with_token = await hooked.run("create", "-f", "-", input=hub_ws("hub-gated", "acme/gated", "hf"))
        assert with_token.returncode == 0, with_token.stderr
        assert ("/acme/gated/resolve/main/config.json", "Bearer hf_ok") in fake.requests
        down_url = fake.url
    hub.clear_cache()  # the fake Hub is gone: nobody listens at HF_ENDPOINT now
    down = await hooked.run("create", "-f", "-", input=hub_ws("hub-down", "acme/other"))
    assert down.returncode != 0
    assert f"cannot reach the Hugging Face Hub at {down_url} (HF_ENDPOINT)" in down.stderr
