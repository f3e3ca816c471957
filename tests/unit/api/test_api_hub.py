"""Any Hugging Face model (``inference.preset.name: org/model``) resolved on a fake Hub.

The Hub is ``tests/hub_fake.py`` on 127.0.0.1 with ``HF_ENDPOINT`` pointed at it: nothing here
reaches the internet.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hub_fake import PHI3_MINI_CONFIG, PHI3_MINI_FILES, FakeHub, fake_hub
from kaito.api import hub
from kaito.api.webhook import validate_inferenceset_request_with_api, validate_request_with_api
from kaito.api.workspace import Workspace
from kaito.api.workspace.validation import validate_workspace
from kaito.cli import estimate as estimate_cli
from kaito.cli import presets as presets_cli
from kaito.cli import validate as validate_cli
from kaito.controllers.workspace import inference
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.presets import estimate, get_preset, get_sku, list_presets
from kaito.presets.hub import (
    HubModelError,
    find_hub_catalog,
    hub_catalog,
    parse_model_ref,
    preset_from_hf_config,
    vllm_architectures,
)
from kaito.runtime import ApiError

A100 = "Standard_NC24ads_A100_v4"
GATED_TOKEN = "hf_secret_token"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub() as h:
        h.add("acme/phi3-copy", PHI3_MINI_CONFIG, PHI3_MINI_FILES, revisions=("main", "v1"))
        h.add("acme/gated", PHI3_MINI_CONFIG, PHI3_MINI_FILES, token=GATED_TOKEN)
        h.add("acme/bert", {"architectures": ["BertForMaskedLM"], "num_hidden_layers": 12})
        big = {**PHI3_MINI_CONFIG, "num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64}
        h.add("acme/huge", big, [("model.safetensors", 400_000_000_000)])
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        hub.clear_cache()
        yield h
        hub.clear_cache()


def ws(name: str, secret: str | None = None, instance_type: str = A100) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": name}
    if secret:
        preset["presetOptions"] = {"modelAccessSecret": secret}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default"},
        "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": preset},
    }


def lookup(obj: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    found = hub.hub_preset_of(obj)
    assert found is not None
    return {found[0]: hub.resolve_answer(found[0], token)}


# --- the pure half -------------------------------------------------------------------------------


def test_model_refs() -> None:
    assert parse_model_ref("org/model") == parse_model_ref("org/model@main")
    ref = parse_model_ref("org/model@v1.0")
    assert ref is not None and (ref.repo, ref.revision, str(ref)) == ("org/model", "v1.0", "org/model@v1.0")
    for bad in ("phi-4", "org/../x", "org/m@", "org/m@../x", "/m", "a/b/c"):
        assert parse_model_ref(bad) is None, bad


def test_architecture_table_is_vllms() -> None:
    table = vllm_architectures()
    assert table.supports("Phi3ForCausalLM") and table.supports("LlamaForCausalLM")
    assert table.supports("Gemma3ForConditionalGeneration")  # multimodal, generates text
    assert not table.supports("BertForMaskedLM")


def test_float32_checkpoint_is_counted_at_16_bit() -> None:
    ref = parse_model_ref("org/m")
    assert ref is not None
    cfg = {**PHI3_MINI_CONFIG, "torch_dtype": "float32"}
    preset = preset_from_hf_config(ref, cfg, 16_000_000_000)
    assert preset.weights_gb == pytest.approx(8.0) and preset.params_b == pytest.approx(4.0)


def test_multimodal_text_config_is_merged() -> None:
    ref = parse_model_ref("org/vlm")
    assert ref is not None
    text = {k: v for k, v in PHI3_MINI_CONFIG.items() if k != "architectures"}
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "text_config": text}
    preset = preset_from_hf_config(ref, cfg, 8_000_000_000)
    assert (preset.num_layers, preset.num_kv_heads, preset.head_dim) == (32, 32, 96)


# --- resolution against the fake Hub -------------------------------------------------------------


def test_supported_model_is_sized_like_the_matching_preset(fake: FakeHub) -> None:
    """phi-3-mini's real config.json and file sizes give the phi-3-mini preset's plan."""
    model = hub.resolve_hub_model("acme/phi3-copy")
    catalog = get_preset("phi-3-mini-4k-instruct")
    assert model.architecture == "Phi3ForCausalLM" and model.custom and not model.gated
    assert model.weights_gb == pytest.approx(catalog.weights_gb, rel=1e-3)
    assert model.params_b == pytest.approx(catalog.params_b, rel=1e-3)
    for field in ("context_length", "num_layers", "hidden_size", "vocab_size", "num_kv_heads", "head_dim"):
        assert getattr(model, field) == getattr(catalog, field), field
    for itype in (A100, "Standard_NC6s_v3", "Standard_NV36ads_A10_v5"):
        sku = get_sku(itype)
        assert sku is not None
        ours, theirs = estimate(model, sku), estimate(catalog, sku)
        assert (ours.fits, ours.node_count, ours.tensor_parallel, ours.max_model_len) == (
            theirs.fits,
            theirs.node_count,
            theirs.tensor_parallel,
            theirs.max_model_len,
        ), itype
        assert ours.kv_cache_tokens == pytest.approx(theirs.kv_cache_tokens, rel=0.01), itype


def test_answers_are_cached(fake: FakeHub) -> None:
    hub.resolve_hub_model("acme/phi3-copy")
    hub.resolve_hub_model("acme/phi3-copy")
    assert len(fake.requests) == 2  # config.json and the listing, once
    with pytest.raises(HubModelError):
        hub.resolve_hub_model("acme/nope")
    with pytest.raises(HubModelError):
        hub.resolve_hub_model("acme/nope")
    assert len(fake.requests) == 3


def test_paged_listing_is_followed(fake: FakeHub) -> None:
    fake.page_size = 2
    model = hub.resolve_hub_model("acme/phi3-copy")
    assert model.weights_gb == pytest.approx(7.642, rel=1e-3)
    assert len(fake.requests) == 1 + 3  # config.json and three pages of five files


def test_revision_is_read_and_unknown_revision_refused(fake: FakeHub) -> None:
    assert hub.resolve_hub_model("acme/phi3-copy@v1").revision == "v1"
    assert fake.requests[0][0] == "/acme/phi3-copy/resolve/v1/config.json"
    assert fake.requests[1][0] == "/api/models/acme/phi3-copy/tree/v1?recursive=true"
    with pytest.raises(HubModelError, match="no revision 'v9'"):
        hub.resolve_hub_model("acme/phi3-copy@v9")


def test_gated_needs_the_token(fake: FakeHub) -> None:
    with pytest.raises(HubModelError) as exc:
        hub.resolve_hub_model("acme/gated")
    assert exc.value.reason == "GatedModel" and "set presetOptions.modelAccessSecret" in str(exc.value)
    with pytest.raises(HubModelError, match="accept the model's licence"):
        hub.resolve_hub_model("acme/gated", "wrong")
    model = hub.resolve_hub_model("acme/gated", GATED_TOKEN)
    assert model.gated and fake.requests[-1][1] == f"Bearer {GATED_TOKEN}"


def test_redirects_keep_the_token_on_the_hub_only(fake: FakeHub) -> None:
    fake.moved["acme/renamed"] = (fake.url, "acme/gated")
    assert hub.resolve_hub_model("acme/renamed", GATED_TOKEN).hf_repo == "acme/renamed"
    with fake_hub() as other:
        other.add("acme/gated", PHI3_MINI_CONFIG, PHI3_MINI_FILES, token=GATED_TOKEN)
        fake.moved["acme/elsewhere"] = (other.url, "acme/gated")
        with pytest.raises(HubModelError) as exc:
            hub.resolve_hub_model("acme/elsewhere", GATED_TOKEN)
        assert exc.value.reason == "GatedModel"
        assert other.requests and all(auth is None for _, auth in other.requests)


# --- validation (the webhook's rules) ------------------------------------------------------------


def test_validation_admits_and_sizes_a_hub_model(fake: FakeHub) -> None:
    obj = ws("acme/phi3-copy")
    res = validate_workspace(obj, hub_models=lookup(obj))
    assert res.ok and res.warnings == [], res.errors
    huge = ws("acme/huge", instance_type="Standard_NC6s_v3")
    res = validate_workspace(huge, hub_models=lookup(huge))
    assert [e.field for e in res.errors] == ["resource.instanceType"]
    assert "not enough GPU for acme/huge" in res.errors[0].message


@pytest.mark.parametrize(
    ("name", "token", "wanted"),
    [
        ("acme/gated", None, "set presetOptions.modelAccessSecret"),
        ("acme/bert", None, "BertForMaskedLM model, which vLLM"),
        ("acme/nope", None, "no Hugging Face model 'acme/nope'"),
    ],
)
def test_validation_refusals_name_the_field_and_fix(
    fake: FakeHub, name: str, token: str | None, wanted: str
) -> None:
    obj = ws(name)
    res = validate_workspace(obj, hub_models=lookup(obj, token))
    assert [e.field for e in res.errors] == ["inference.preset.name"]
    assert wanted in res.errors[0].message


def test_gated_with_token_is_admitted(fake: FakeHub) -> None:
    obj = ws("acme/gated", secret="hf")
    res = validate_workspace(obj, hub_models=lookup(obj, GATED_TOKEN))
    assert res.ok, res.errors


def test_hub_down_is_refused_naming_hf_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_hub() as h:
        url = h.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # nobody listens there any more
    hub.clear_cache()
    obj = ws("acme/phi3-copy")
    res = validate_workspace(obj, hub_models=lookup(obj))
    assert [e.field for e in res.errors] == ["inference.preset.name"]
    assert f"cannot reach the Hugging Face Hub at {url} (HF_ENDPOINT)" in res.errors[0].message


def test_offline_validation_only_warns() -> None:
    res = validate_workspace(ws("acme/phi3-copy"))
    assert res.ok and "was not looked up on the Hugging Face Hub" in res.warnings[0]


# --- the webhook --------------------------------------------------------------------------------


class SecretClient:
    """Just enough of kaito.runtime.Client for the webhook's lookups."""

    def __init__(self, secrets: dict[str, dict[str, Any]]) -> None:
        self.secrets = secrets

    async def get(self, gvk: Any, name: str, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        if name not in self.secrets:
            raise ApiError(404, "not found")
        return self.secrets[name]

    async def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []


def review(
    obj: dict[str, Any], operation: str = "CREATE", old: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"uid": "u", "operation": operation, "namespace": "default", "object": obj, "oldObject": old}


def test_webhook_reads_the_secret_and_asks_the_hub(fake: FakeHub) -> None:
    token = {"data": {"HF_TOKEN": base64.b64encode(GATED_TOKEN.encode()).decode()}}
    client: Any = SecretClient({"hf": token})

    async def run() -> list[dict[str, Any]]:
        return [
            await validate_request_with_api(review(ws("acme/gated", secret="hf")), None, client),
            await validate_request_with_api(review(ws("acme/gated")), None, client),
            await validate_request_with_api(review(ws("acme/gated", secret="missing")), None, client),
            await validate_request_with_api(review(ws("acme/bert")), None, client),
        ]

    ok, no_secret, missing, bert = asyncio.run(run())
    assert ok["allowed"], ok
    assert not no_secret["allowed"] and "modelAccessSecret" in no_secret["status"]["message"]
    assert "Secret 'missing'" in missing["status"]["message"]
    assert "vLLM" in bert["status"]["message"] and "BertForMaskedLM" in bert["status"]["message"]
    asked = len(fake.requests)
    # an UPDATE that keeps the name (status, finalizer) does not ask the Hub again
    same = asyncio.run(
        validate_request_with_api(review(ws("acme/bert"), "UPDATE", ws("acme/bert")), None, client)
    )
    assert same["allowed"] and len(fake.requests) == asked


def test_inferenceset_template_model_is_asked_on_the_hub(fake: FakeHub) -> None:
    iset = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "labelSelector": {"matchLabels": {"apps": "chat"}},
            "template": {
                "resource": {"instanceType": A100},
                "inference": {"preset": {"name": "acme/bert"}},
            },
        },
    }
    client: Any = SecretClient({})
    answer = asyncio.run(validate_inferenceset_request_with_api(review(iset), None, client))
    assert not answer["allowed"]
    assert "spec.template.inference.preset.name" in json.dumps(answer["status"])
    assert "BertForMaskedLM" in answer["status"]["message"]
    iset["spec"]["template"]["inference"]["preset"]["name"] = "acme/phi3-copy"
    answer = asyncio.run(validate_inferenceset_request_with_api(review(iset), None, client))
    assert answer["allowed"], answer


# --- the controller's plan and pod ---------------------------------------------------------------


def test_plan_and_pod_run_vllm_with_the_hub_id(fake: FakeHub) -> None:
    obj = ws("acme/phi3-copy@v1", secret="hf", instance_type="Standard_NC12s_v3")
    obj["metadata"]["uid"] = "0000"
    model = Workspace.from_manifest(obj)
    preset = hub.resolve_hub_model("acme/phi3-copy@v1")
    plan = inference.plan_for(model, preset)
    assert plan.hub_repo == "acme/phi3-copy" and plan.node_count == 1
    sts = inference.build_statefulset(
        obj, model, plan, affinity={}, revision=1, options=WorkspaceControllerOptions()
    )
    container = sts["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert "--preset" not in argv
    assert argv[argv.index("--model") + 1] == "acme/phi3-copy"
    assert argv[argv.index("--revision") + 1] == "v1"
    assert argv[argv.index("--tensor-parallel-size") + 1] == str(plan.tensor_parallel)
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}},
    } in container["env"]
    with pytest.raises(inference.PlanError, match=r"unknown preset|not in the catalog"):
        inference.plan_for(model)  # without the Hub's answer there is nothing to size


# --- the CLI ------------------------------------------------------------------------------------

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("validate")(validate_cli.validate)
    app.command("estimate")(estimate_cli.estimate_cmd)
    return app


def test_cli_validate_and_estimate(fake: FakeHub, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(ws("acme/phi3-copy")))
    res = runner.invoke(_app(), ["validate", "-f", str(good)])
    assert res.exit_code == 0 and "1 checked, 0 rejected" in res.output, res.output
    gated = tmp_path / "gated.yaml"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf"},
        "stringData": {"HF_TOKEN": GATED_TOKEN},
    }
    gated.write_text(yaml.safe_dump_all([ws("acme/gated", secret="hf"), secret]))
    res = runner.invoke(_app(), ["validate", "-f", str(gated)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ws("acme/bert")))
    res = runner.invoke(_app(), ["validate", "-f", str(bad)], env={"COLUMNS": "300"})
    assert res.exit_code == 1 and "inference.preset.name" in res.output and "BertForMaskedLM" in res.output
    res = runner.invoke(_app(), ["validate", "--offline", "-f", str(bad)])
    assert res.exit_code == 0 and "not looked up" in res.output

    res = runner.invoke(_app(), ["estimate", "-p", "acme/phi3-copy", "-t", A100, "-o", "json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    theirs = estimate(get_preset("phi-3-mini-4k-instruct"), get_sku(A100))  # type: ignore[arg-type]
    assert plan["fits"] and plan["maxModelLen"] == theirs.max_model_len
    res = runner.invoke(_app(), ["estimate", "-p", "acme/gated"])
    assert res.exit_code == 1 and "modelAccessSecret" in res.output
    res = runner.invoke(_app(), ["estimate", "-p", "acme/gated", "-t", A100], env={"HF_TOKEN": GATED_TOKEN})
    assert res.exit_code == 0, res.output


# --- upstream's model catalog ---------------------------------------------------------------------


def test_upstream_catalog_models_kaito_lacks_are_listed() -> None:
    entries = hub_catalog()
    assert len(entries) == 35  # upstream v0.12 lists 60; 25 are kaito presets already
    table = vllm_architectures()
    known = {p.hf_repo.lower() for p in list_presets(include_deprecated=True)}
    for e in entries:
        assert e.preset.custom and e.preset.revision == "main"
        assert e.preset.hf_repo.lower() not in known
        assert table.supports(e.preset.architecture), e.preset.name
    found = find_hub_catalog("qwen/qwen3-8b-awq")
    assert found is not None and found.preset.quantization == "awq"
    res = runner.invoke(_app_presets(), ["presets", "list", "-o", "json"])
    items = json.loads(res.output)["items"]
    sources = {i["name"]: i["source"] for i in items}
    assert sources["phi-4"] == "catalog" and sources["Qwen/Qwen3-8B-AWQ"] == "hub"
    res = runner.invoke(_app_presets(), ["presets", "list", "--no-hub", "-o", "json"])
    assert {i["source"] for i in json.loads(res.output)["items"]} == {"catalog"}


def _app_presets() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(presets_cli.app, name="presets")
    app.command("validate")(validate_cli.validate)
    return app


def test_controller_keeps_the_last_answer_when_the_hub_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from kaito.controllers.workspace.reconciler import WorkspaceReconciler

    token = {"data": {"HF_TOKEN": base64.b64encode(GATED_TOKEN.encode()).decode()}}
    manager: Any = SimpleNamespace(client=SecretClient({"hf": token}), cache=None)
    obj = ws("acme/gated", secret="hf")

    async def run() -> None:
        rec = WorkspaceReconciler(manager, provisioner=None)  # type: ignore[arg-type]
        with fake_hub() as h:
            h.add("acme/gated", PHI3_MINI_CONFIG, PHI3_MINI_FILES, token=GATED_TOKEN)
            monkeypatch.setenv("HF_ENDPOINT", h.url)
            hub.clear_cache()
            first = await rec.inference._hub_model(obj)
            assert first is not None and first.gated
            with pytest.raises(inference.PlanError) as exc:
                await rec.inference._hub_model(ws("acme/gated"))  # no Secret named: no token
            assert exc.value.reason == "GatedModel"
        hub.clear_cache()  # cache expired, Hub gone
        assert await rec.inference._hub_model(obj) == first
        with pytest.raises(inference.PlanError) as exc:
            await rec.inference._hub_model(ws("acme/never-seen"))
        assert exc.value.reason == "HubUnreachable" and "HF_ENDPOINT" in str(exc.value)

    asyncio.run(run())
