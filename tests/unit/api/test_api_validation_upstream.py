"""Upstream Kaito's admission rules that kaito adds (issue 15 item 4): each rule is shown rejecting
one Workspace and accepting its corrected twin, through the pure validator and ``kaito validate``.

Upstream's own example Workspaces and ConfigMaps (tests/data/upstream, source named in each file)
must pass unchanged.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kaito.api.imageref import image_ref_problem
from kaito.api.validation import ValidationOptions
from kaito.api.webhook import default_request, review
from kaito.api.workspace.inference_config import config_map_problems
from kaito.api.workspace.validation import validate_workspace
from kaito.cli import validate as validate_cli
from kaito.inference.config import ConfigError, load_config_file
from kaito.presets import get_preset

UPSTREAM = Path(__file__).resolve().parents[2] / "data" / "upstream"
runner = CliRunner()


def base(**over: Any) -> dict[str, Any]:
    ws: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "team"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "x"}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    for dotted, value in over.items():
        node = ws
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return ws


def tuning_ws(**over: Any) -> dict[str, Any]:
    ws = base()
    del ws["inference"]
    ws["tuning"] = {
        "preset": {"name": "phi-4-mini-instruct"},
        "method": "qlora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/out:1", "imagePushSecret": "push"},
    }
    merged = base(**over)
    for key in ("metadata", "resource"):
        ws[key] = merged[key]
    for dotted, value in over.items():
        if dotted.startswith("tuning__"):
            node = ws
            *parents, last = dotted.split("__")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
    return ws


def errs(obj: Any, old: Any = None, config_maps: Any = None, **opts: Any) -> list[str]:
    result = validate_workspace(obj, old, ValidationOptions(**opts), config_maps=config_maps)
    return [str(e) for e in result.errors]


def warnings(obj: Any, **kw: Any) -> list[str]:
    return validate_workspace(obj, **kw).warnings


# --- tuning on one node -------------------------------------------------------------------------


def test_tuning_with_count_above_one_is_rejected() -> None:
    (msg,) = errs(tuning_ws(resource__count=2))
    assert msg.startswith("resource.count: tuning runs on a single node, got 2")
    assert errs(tuning_ws(resource__count=1)) == []
    assert errs(tuning_ws()) == []


# --- adapters -------------------------------------------------------------------------------------


def adapter(name: str = "my-adapter", **source: Any) -> dict[str, Any]:
    return {"source": {"name": name, **(source or {"image": "myregistry.azurecr.io/adapters/a:1"})}}


def test_adapter_name_must_be_a_dns_label() -> None:
    (msg,) = errs(base(inference__adapters=[adapter("My.Adapter")]))
    assert msg.startswith("inference.adapters[0].source.name: 'My.Adapter' cannot name an adapter")
    assert errs(base(inference__adapters=[adapter("my-adapter")])) == []


def test_adapter_source_is_an_image_or_a_volume() -> None:
    (msg,) = errs(base(inference__adapters=[adapter(urls=["https://example.com/a.safetensors"])]))
    assert msg.startswith("inference.adapters[0].source.urls: URLs are not an adapter source")
    assert errs(base(inference__adapters=[adapter(image="ghcr.io/org/adapter@sha256:" + "a" * 64)])) == []
    pvc = {"persistentVolumeClaim": {"claimName": "my-adapter"}}
    assert errs(base(inference__adapters=[adapter(volumeSource=pvc)])) == []
    # as upstream, a volume wins over an image when a source names both
    assert errs(base(inference__adapters=[adapter(volumeSource=pvc, image="not a reference")])) == []
    (msg,) = errs(base(inference__adapters=[adapter(volumeSource={})]))
    assert msg.startswith("inference.adapters[0].source.volumeSource: must name exactly one volume type")
    (msg,) = errs(base(inference__adapters=[adapter(volumeSource={**pvc, "emptyDir": {}})]))
    assert "got keys ['emptyDir', 'persistentVolumeClaim']" in msg
    (msg,) = errs(base(inference__adapters=[{"source": {"name": "a"}}]))
    assert msg.startswith(
        "inference.adapters[0].source: needs source.image (an adapter image) or source.volumeSource"
    )


def test_adapter_image_reference_is_parsed() -> None:
    (msg,) = errs(base(inference__adapters=[adapter(image="https://myregistry.azurecr.io/a:1")]))
    assert msg.startswith(
        "inference.adapters[0].source.image: 'https://myregistry.azurecr.io/a:1' is not a valid"
    )
    assert "has a URL scheme" in msg and "e.g. myregistry.azurecr.io/adapters/phi-3:0.0.1" in msg
    (msg,) = errs(base(inference__adapters=[adapter(image="myregistry.azurecr.io/a:v1:v2")]))
    assert "tag" in msg
    assert errs(base(inference__adapters=[adapter(image="myregistry.azurecr.io/a:v1")])) == []


def test_placeholder_images_warn_instead_of_rejecting() -> None:
    # The seed's README placeholder: unpullable, but the README must stay valid.
    ws = base(inference__adapters=[adapter(image="ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1")])
    assert errs(ws) == []
    (warning,) = [w for w in warnings(ws) if "source.image" in w]
    assert "no node can pull it" in warning


def test_adapter_strength_is_a_number_from_0_to_1_and_warned_under_vllm() -> None:
    for bad in ("1.01", "NaN", "-0", "0.5.1"):
        ws = base(inference__adapters=[{**adapter(), "strength": bad}])
        assert any(e.startswith("inference.adapters[0].strength:") for e in errs(ws)), bad
    half = base(inference__adapters=[{**adapter(), "strength": "0.5"}])
    assert errs(half) == []
    # Upstream refuses strength with vLLM; kaito applies it by scaling and says where it cannot.
    assert any("upstream Kaito rejects strength with vLLM" in w for w in warnings(half))
    full = base(inference__adapters=[{**adapter(), "strength": "1.0"}])
    assert not any("strength" in w for w in warnings(full))
    transformers = copy.deepcopy(half)
    transformers["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    assert not any("strength" in w for w in warnings(transformers))


# --- gated models and their secret ----------------------------------------------------------------


def test_gated_model_without_secret_is_rejected() -> None:
    gated = base(inference__preset={"name": "llama-3.1-8b-instruct"})
    (msg,) = errs(gated)
    assert msg.startswith("inference.preset.presetOptions.modelAccessSecret: llama-3.1-8b-instruct is gated")
    assert "HF_TOKEN" in msg
    with_secret = base(
        inference__preset={"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}
    )
    assert errs(with_secret) == []


def test_gated_model_named_by_its_repo_id_needs_the_secret_too() -> None:
    by_repo = base(inference__preset={"name": "meta-llama/Llama-3.1-8B-Instruct"})
    (msg,) = errs(by_repo)
    assert "modelAccessSecret" in msg and "gated" in msg
    by_repo["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert errs(by_repo) == []


def test_private_image_needs_no_token() -> None:
    private = base(
        inference__preset={
            "name": "llama-3.1-8b-instruct",
            "accessMode": "private",
            "presetOptions": {"image": "myregistry.azurecr.io/llama:1"},
        }
    )
    assert errs(private) == []


def test_secret_for_an_open_model_is_a_warning() -> None:
    ws = base(inference__preset={"name": "phi-4-mini-instruct", "presetOptions": {"modelAccessSecret": "hf"}})
    assert errs(ws) == []
    assert any("is not gated; the Secret is not needed" in w for w in warnings(ws))
    assert not any("modelAccessSecret" in w for w in warnings(base()))


# --- the inference ConfigMap ----------------------------------------------------------------------


def config_map(text: str | None, name: str = "my-config") -> dict[str, Any]:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    if text is not None:
        cm["data"] = {"inference_config.yaml": text}
    return cm


def test_config_map_must_exist() -> None:
    ws = base(inference__config="my-config")
    (msg,) = errs(ws, config_maps={"my-config": None})
    assert msg == (
        "inference.config: ConfigMap 'my-config' not found in namespace 'team'; create it (key "
        "inference_config.yaml) before the Workspace, or remove inference.config to use the defaults"
    )
    assert errs(ws, config_maps={"my-config": config_map("vllm: {}\n")}) == []
    (msg,) = errs(ws, config_maps={"my-config": "403 Forbidden: nope"})
    assert msg.startswith("inference.config: could not read ConfigMap 'my-config' in namespace 'team'")


def test_config_map_check_without_a_cluster_is_reported_skipped() -> None:
    result = validate_workspace(base(inference__config="my-config"))
    assert result.ok
    assert result.skipped == [
        "inference.config: ConfigMap 'my-config' was not checked: nothing to read it from (kaito "
        "validate: give the ConfigMap with -f too)"
    ]
    assert validate_workspace(base()).skipped == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "has no key inference_config.yaml"),
        ("vllm: [unclosed\n", "is not valid YAML at line"),
        ("- a list\n", "must be a mapping"),
        ("vlm:\n  max-model-len: 10\n", "unknown top-level key(s) ['vlm']"),
        ("vllm: 3\n", "'vllm' must be a mapping"),
        ("max_probe_steps: -1\n", "max_probe_steps must be a non-negative integer"),
        ("kv_cache_cpu_memory_utilization: 2\n", "kv_cache_cpu_memory_utilization must be a number"),
        ("server:\n  colour: red\n", "unknown server setting(s) ['colour']"),
        ("vllm:\n  max-model-len: lots\n", "vllm.max-model-len must be a token count or 'auto'"),
        ("vllm:\n  max-model-len: 131073\n", "exceeds phi-4-mini-instruct's context window of 131072"),
        ("vllm:\n  max_model_len: 200000\n", "vllm.max_model_len 200000 exceeds"),
    ],
)
def test_config_map_contents_rejected(text: str | None, why: str) -> None:
    ws = base(inference__config="my-config")
    found = errs(ws, config_maps={"my-config": config_map(text)})
    assert len(found) == 1 and found[0].startswith("inference.config: ") and why in found[0], found


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vllm:\n  max-model-len: 131072\n",
        "vllm:\n  max-model-len: auto\n",
        "vllm:\n  max-model-len: '4096'\n",
        "max_probe_steps: 0\nkv_cache_cpu_memory_utilization: 0.5\nvllm: {}\nserver: {max_queue: 8}\n",
    ],
)
def test_config_map_contents_accepted(text: str) -> None:
    assert errs(base(inference__config="my-config"), config_maps={"my-config": config_map(text)}) == []


def test_max_model_len_limit_applies_to_vllm_only() -> None:
    transformers = {"name": "ws", "annotations": {"kaito.sh/runtime": "transformers"}}
    ws = base(inference__config="my-config", metadata=transformers)
    assert errs(ws, config_maps={"my-config": config_map("vllm:\n  max-model-len: 999999\n")}) == []


@pytest.mark.parametrize(
    "text",
    [
        "vlm: {}\n",
        "vllm: 3\n",
        "max_probe_steps: -1\n",
        "kv_cache_cpu_memory_utilization: 2\n",
        "server:\n  colour: red\n",
        "- a\n",
        "vllm: {max-model-len: 100}\n",
        "max_probe_steps: 6\nvllm:\n  cpu-offload-gb: 0\n",
    ],
)
def test_config_checks_agree_with_the_server(text: str, tmp_path: Path) -> None:
    """The webhook refuses exactly the files the server would refuse at start-up (and the
    max-model-len limit on top)."""
    path = tmp_path / "inference_config.yaml"
    path.write_text(text)
    try:
        load_config_file(path)
        server_ok = True
    except ConfigError:
        server_ok = False
    ours = config_map_problems(config_map(text), get_preset("phi-4-mini-instruct"))
    assert (not ours) == server_ok, (text, ours)


def test_upstream_config_maps_pass_for_their_models() -> None:
    for name in ("inference-params-template.yaml", "tool-calling-inference-config.yaml"):
        cm = yaml.safe_load((UPSTREAM / name).read_text())
        assert config_map_problems(cm, get_preset("phi-4-mini-instruct")) == [], name


def test_config_map_unchanged_on_update_is_not_rechecked() -> None:
    ws = base(inference__config="my-config")
    labelled = copy.deepcopy(ws)
    labelled["metadata"]["labels"] = {"x": "y"}
    # The ConfigMap was deleted after create: the controller's updates must still go through.
    assert errs(labelled, old=ws, config_maps={"my-config": None}) == []
    renamed = base(inference__config="other")
    (msg,) = errs(renamed, old=ws, config_maps={"other": None})
    assert msg.startswith("inference.config: ConfigMap 'other' not found")


def test_tuning_config_map_must_exist_and_hold_training_config() -> None:
    ws = tuning_ws(tuning__config="my-tuning")
    (msg,) = errs(ws, config_maps={"my-tuning": None})
    assert msg.startswith("tuning.config: ConfigMap 'my-tuning' not found in namespace 'team'")
    no_key = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-tuning"}, "data": {}}
    (msg,) = errs(ws, config_maps={"my-tuning": no_key})
    assert msg.startswith("tuning.config: ConfigMap 'my-tuning' has no key training_config.yaml")
    bad_yaml = {**no_key, "data": {"training_config.yaml": "training_config: [\n"}}
    (msg,) = errs(ws, config_maps={"my-tuning": bad_yaml})
    assert "is not valid YAML" in msg
    upstream = yaml.safe_load((UPSTREAM / "qlora-params-template.yaml").read_text())
    named = tuning_ws(tuning__config="qlora-params-template")
    assert errs(named, config_maps={"qlora-params-template": upstream}) == []
    skipped = validate_workspace(ws).skipped
    assert skipped and skipped[0].startswith("tuning.config: ConfigMap 'my-tuning' was not checked")


# --- image references elsewhere -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ws", "path"),
    [
        (tuning_ws(tuning__input={"image": "registry.example.com//data:1"}), "tuning.input.image"),
        (
            tuning_ws(tuning__output={"image": "registry.example.com/out:", "imagePushSecret": "p"}),
            "tuning.output.image",
        ),
        (
            base(
                inference__preset={
                    "name": "phi-4-mini-instruct",
                    "accessMode": "private",
                    "presetOptions": {"image": "registry example.com/phi:1"},
                }
            ),
            "inference.preset.presetOptions.image",
        ),
        (
            base(
                inference__preset=None,
                inference__template={"spec": {"containers": [{"name": "c", "image": "img@sha256:12"}]}},
            ),
            "inference.template.spec.containers[0].image",
        ),
    ],
)
def test_image_references_are_parsed_everywhere(ws: dict[str, Any], path: str) -> None:
    found = errs(ws)
    assert len(found) == 1 and found[0].startswith(f"{path}: "), found
    assert "is not a valid image reference" in found[0]


@pytest.mark.parametrize(
    "ref",
    [
        "nginx",
        "nginx:1.27",
        "docker.io/library/nginx:latest",
        "localhost:5000/a/b_c__d-e:tag",
        "myregistry.azurecr.io/kaito/phi-3@sha256:" + "0" * 64,
        "[::1]:5000/x:y",
    ],
)
def test_valid_image_references(ref: str) -> None:
    assert image_ref_problem(ref) is None


@pytest.mark.parametrize(
    "ref",
    ["", " nginx", "a b", "https://a.io/b", "a//b", "a/b/", "x:", "x:-t", "x@sha256:abc", "-x", "a.io/B!"],
)
def test_invalid_image_references(ref: str) -> None:
    problem = image_ref_problem(ref)
    assert problem is not None and not problem.placeholder, ref


# --- annotations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "bad", "good"),
    [
        ("kaito.sh/enablelb", "yes", "True"),
        ("kaito.sh/runtime", "tgi", "transformers"),
        ("kaito.sh/bypass-resource-checks", "false", "true"),
        ("kaito.sh/node-image-family", "windows", "AzureLinux"),
    ],
)
def test_annotation_values(key: str, bad: str, good: str) -> None:
    (msg,) = errs(base(metadata={"name": "ws", "annotations": {key: bad}}))
    assert msg.startswith(f"metadata.annotations[{key}]: ")
    assert errs(base(metadata={"name": "ws", "annotations": {key: good}})) == []


def test_runtime_must_serve_the_preset() -> None:
    transformers = {"name": "ws", "annotations": {"kaito.sh/runtime": "transformers"}}
    ws = base(inference__preset={"name": "gpt-oss-20b"}, metadata=transformers)
    (msg,) = errs(ws)
    assert msg.startswith("metadata.annotations[kaito.sh/runtime]: kaito serves gpt-oss-20b only with vllm")
    ws["metadata"]["annotations"]["kaito.sh/runtime"] = "vllm"
    assert errs(ws) == []


def test_bypass_resource_checks_turns_the_gpu_check_into_a_warning() -> None:
    small = base(
        resource__instanceType="Standard_NC6s_v3", resource__count=1, inference__preset={"name": "phi-4"}
    )
    (msg,) = errs(small)
    assert msg.startswith("resource.count: phi-4 needs 3 x Standard_NC6s_v3")
    small["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "true"}
    assert errs(small) == []
    assert any("GPU memory check bypassed" in w for w in warnings(small))


# --- immutable fields on update -------------------------------------------------------------------


def test_update_immutables_as_upstream() -> None:
    old = base(resource__count=1)
    (msg,) = errs(base(resource__count=2), old=old)
    assert msg.startswith("resource.count: is immutable (was 1, now 2)")
    assert errs(base(resource__count=1), old=old) == []
    secret = {"modelAccessSecret": "s"}
    with_secret = base(inference__preset={"name": "phi-4-mini-instruct", "presetOptions": secret})
    (msg,) = errs(with_secret, old=base())
    assert msg.startswith("inference.preset: is immutable (its accessMode and presetOptions")
    tmpl = {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
    templated = base(inference__preset=None, inference__template=tmpl)
    changed = copy.deepcopy(templated)
    changed["inference"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert errs(changed, old=templated) == []  # the template's contents may change
    old_t = tuning_ws()
    (msg,) = errs(tuning_ws(tuning__method="lora"), old=old_t)
    assert msg.startswith("tuning.method: is immutable (was 'qlora', now 'lora')")
    named = tuning_ws(tuning__input={"name": "d1", "urls": ["https://example.com/x"]})
    renamed = tuning_ws(tuning__input={"name": "d2", "urls": ["https://example.com/x"]})
    (msg,) = errs(renamed, old=named)
    assert msg.startswith("tuning.input.name: is immutable")
    assert errs(named, old=named) == []


# --- the defaulting webhook on UPDATE -------------------------------------------------------------


def _request(obj: dict[str, Any], op: str = "CREATE", old: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"uid": "1", "operation": op, "object": obj, "oldObject": old}


def test_defaulting_does_not_rewrite_instance_type_on_update() -> None:
    lower = base(resource__instanceType="standard_nc24ads_a100_v4")
    canonical = base()
    # Stored lower-case (created before the webhook ran): a re-apply must not be "changed".
    assert "patch" not in default_request(_request(lower, "UPDATE", old=lower))
    # Another spelling of the stored SKU is put back to the stored spelling, not the table's.
    resp = default_request(_request(canonical, "UPDATE", old=lower))
    restore = [{"op": "replace", "path": "/resource/instanceType", "value": "standard_nc24ads_a100_v4"}]
    assert json.loads(base64.b64decode(resp["patch"])) == restore
    # A real change is left alone for the validator to refuse.
    other = base(resource__instanceType="standard_nc48ads_a100_v4")
    assert "patch" not in default_request(_request(other, "UPDATE", old=canonical))
    # CREATE still canonicalises.
    assert "patch" in default_request(_request(lower))


def test_webhook_review_reports_the_skipped_config_check_as_a_warning() -> None:
    body = {"request": _request(base(inference__config="my-config"))}
    resp = review(body)["response"]
    assert resp["allowed"] and any("was not checked" in w for w in resp["warnings"])


# --- upstream's examples and kaito validate --------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("validate")(validate_cli.validate)
    app.command("noop")(_noop)
    return app


def _noop() -> None:
    """A second command, so typer keeps ``validate`` as a subcommand."""


def _upstream(*names: str) -> list[str]:
    return [str(UPSTREAM / n) for n in names]


def test_upstream_examples_pass_kaito_validate() -> None:
    workspaces = sorted(p.name for p in UPSTREAM.glob("workspace-*.yaml") if "arc" not in p.name)
    config_maps = [
        "inference-params-template.yaml",
        "tool-calling-inference-config.yaml",
        "qlora-params-template.yaml",
    ]
    res = runner.invoke(_app(), ["validate", *_upstream(*workspaces, *config_maps)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"{len(workspaces)} checked, 0 rejected" in res.output
    assert "skipped check" not in res.output  # the ConfigMaps they name were among the files
    # Upstream's Arc example runs on Arc SKUs.
    arc_example = _upstream("workspace-phi-3-with-adapters-arc.yaml")
    arc = runner.invoke(_app(), ["validate", "--cloud", "arc", *arc_example])
    assert arc.exit_code == 0, arc.output


def test_kaito_validate_says_the_config_check_was_skipped() -> None:
    tool_call = _upstream("workspace-phi-4-mini-tool-call.yaml")
    res = runner.invoke(_app(), ["validate", *tool_call], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    skipped = "skipped check: inference.config: ConfigMap 'tool-calling-inference-config' was not checked"
    assert skipped in res.output
    res = runner.invoke(_app(), ["validate", "-o", "json", *tool_call], env={"COLUMNS": "300"})
    (item,) = json.loads(res.stdout)["items"]
    assert item["result"] == "valid" and item["skipped"] and "was not checked" in item["skipped"][0]


def test_kaito_validate_checks_a_config_map_given_with_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(yaml.safe_dump(base(inference__config="my-config", metadata={"name": "ws"})))
    cm = tmp_path / "cm.yaml"
    cm.write_text(yaml.safe_dump(config_map("vllm:\n  max-model-len: 200000\n")))
    res = runner.invoke(_app(), ["validate", str(ws), str(cm)], env={"COLUMNS": "300"})
    assert res.exit_code == 1
    assert "vllm.max-model-len 200000 exceeds phi-4-mini-instruct's context window of 131072" in res.output
    cm.write_text(yaml.safe_dump(config_map("vllm:\n  max-model-len: 8192\n")))
    ok = runner.invoke(_app(), ["validate", str(ws), str(cm)], env={"COLUMNS": "300"})
    assert ok.exit_code == 0, ok.output


def test_kaito_validate_refuses_non_utf8_and_empty_files_cleanly(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"kind: Workspace\nmetadata: {name: caf\xe9}\n")
    res = runner.invoke(_app(), ["validate", str(latin1)])
    assert res.exit_code == 1 and (res.exception is None or isinstance(res.exception, SystemExit))
    assert "is not UTF-8 text (byte 0xe9 at offset 36)" in res.output and "Traceback" not in res.output
    for text in ("", "   \n", "# just a comment\n---\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        res = runner.invoke(_app(), ["validate", str(empty)])
        assert res.exit_code == 1 and "is empty (no YAML document in it)" in res.output, text
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    assert runner.invoke(_app(), ["validate", str(good)]).exit_code == 0
    # UTF-16 with a byte-order mark is read, as kubectl reads it.
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(yaml.safe_dump(base()).encode("utf-16"))
    assert runner.invoke(_app(), ["validate", str(utf16)]).exit_code == 0


def test_kaito_validate_refuses_objects_the_apiserver_would_not_store(tmp_path: Path) -> None:
    def sized(n: int) -> Path:
        ws = base()
        ws["inference"]["preset"] = None
        ws["inference"]["template"] = {"metadata": {"labels": {"pad": "x"}}, "spec": {"pad": "x" * n}}
        path = tmp_path / f"ws-{n}.yaml"
        path.write_text(yaml.safe_dump(ws))
        return path

    over_etcd = runner.invoke(_app(), ["validate", str(sized(1600 * 1024))], env={"COLUMNS": "300"})
    assert over_etcd.exit_code == 1
    assert "etcd stores at most 1.5 MiB (1572864 bytes) per object" in over_etcd.output
    over_request = runner.invoke(_app(), ["validate", str(sized(3 * 1024 * 1024))], env={"COLUMNS": "300"})
    assert over_request.exit_code == 1
    assert "the apiserver refuses requests over 3 MiB (3145728 bytes)" in over_request.output
    assert runner.invoke(_app(), ["validate", str(sized(1400 * 1024))]).exit_code == 0
    ann = base(metadata={"name": "ws", "annotations": {"note": "x" * (300 * 1024)}})
    path = tmp_path / "ann.yaml"
    path.write_text(yaml.safe_dump(ann))
    res = runner.invoke(_app(), ["validate", str(path)], env={"COLUMNS": "300"})
    assert res.exit_code == 1 and "the apiserver allows at most 256 KiB" in res.output


def _secret(name: str) -> dict[str, Any]:
    return {"name": name, "presetOptions": {"modelAccessSecret": "hf-token"}}


def _annotated(key: str, value: str) -> dict[str, Any]:
    return {"name": "ws", "annotations": {key: value}}


# Each new rule once more, end to end through `kaito validate`: (rejected, accepted, message).
CLI_PAIRS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "tuning count",
        tuning_ws(resource__count=3),
        tuning_ws(resource__count=1),
        "resource.count: tuning runs",
    ),
    (
        "adapter name",
        base(inference__adapters=[adapter("Bad_Name")]),
        base(inference__adapters=[adapter("good-name")]),
        "source.name: 'Bad_Name' cannot name an adapter",
    ),
    (
        "adapter source",
        base(inference__adapters=[adapter(urls=["https://example.com/a"])]),
        base(inference__adapters=[adapter()]),
        "URLs are not an adapter source",
    ),
    (
        "adapter image",
        base(inference__adapters=[adapter(image="r.io/a:b:c")]),
        base(inference__adapters=[adapter(image="r.io/a:b")]),
        "is not a valid image reference",
    ),
    (
        "strength",
        base(inference__adapters=[{**adapter(), "strength": "1.5"}]),
        base(inference__adapters=[{**adapter(), "strength": "0.5"}]),
        "strength: '1.5' is not a strength",
    ),
    (
        "gated",
        base(inference__preset={"name": "llama-3.1-8b-instruct"}),
        base(inference__preset=_secret("llama-3.1-8b-instruct")),
        "llama-3.1-8b-instruct is gated on Hugging Face",
    ),
    (
        "tuning output image",
        tuning_ws(tuning__output={"image": "r.io/out:", "imagePushSecret": "p"}),
        tuning_ws(tuning__output={"image": "r.io/out:1", "imagePushSecret": "p"}),
        "tuning.output.image",
    ),
    (
        "enablelb",
        base(metadata=_annotated("kaito.sh/enablelb", "1")),
        base(metadata=_annotated("kaito.sh/enablelb", "true")),
        "metadata.annotations[kaito.sh/enablelb]",
    ),
    (
        "runtime",
        base(metadata=_annotated("kaito.sh/runtime", "sglang")),
        base(metadata=_annotated("kaito.sh/runtime", "transformers")),
        "'sglang' is not a runtime",
    ),
    (
        "bypass",
        base(metadata=_annotated("kaito.sh/bypass-resource-checks", "no")),
        base(metadata=_annotated("kaito.sh/bypass-resource-checks", "")),
        "metadata.annotations[kaito.sh/bypass-resource-checks]",
    ),
    (
        "node image family",
        base(metadata=_annotated("kaito.sh/node-image-family", "cbl-mariner")),
        base(metadata=_annotated("kaito.sh/node-image-family", "ubuntu")),
        "unsupported node image family 'cbl-mariner'",
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good", "message"), CLI_PAIRS, ids=[p[0] for p in CLI_PAIRS])
def test_each_rule_through_kaito_validate(
    rule: str, bad: dict[str, Any], good: dict[str, Any], message: str, tmp_path: Path
) -> None:
    bad_file, good_file = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad_file.write_text(yaml.safe_dump(bad))
    good_file.write_text(yaml.safe_dump(good))
    refused = runner.invoke(_app(), ["validate", str(bad_file)], env={"COLUMNS": "300"})
    assert refused.exit_code == 1 and message in refused.output, (rule, refused.output)
    accepted = runner.invoke(_app(), ["validate", str(good_file)], env={"COLUMNS": "300"})
    assert accepted.exit_code == 0, (rule, accepted.output)


def test_performance_mode_annotation() -> None:
    key = "kaito.sh/performance-mode"
    for mode in ("balanced", "interactivity", "throughput"):
        assert errs(base(metadata__annotations={key: mode})) == []
    (msg,) = errs(base(metadata__annotations={key: "fast"}))
    assert msg == (
        f"metadata.annotations[{key}]: 'fast' is not a vLLM performance mode; "
        "choose one of: balanced, interactivity, throughput"
    )
    transformers = {key: "throughput", "kaito.sh/runtime": "transformers"}
    assert any("vllm runtime only" in w for w in warnings(base(metadata__annotations=transformers)))
