"""Suite 4 (issue 14): fuzzed Workspaces. Hypothesis makes odd and invalid Workspaces
(fuzz_inputs.py: wrong types, nulls, huge and unicode strings, missing and extra fields, both
served versions) and every one goes through the validation function, the webhook's decision and
the real ``kaito validate`` CLI; a few hundred also go through the real kube-apiserver (CRD schema,
CEL, kaito's webhook served in this process) with the real operator reconciling what is admitted.

Every case must be either rejected with a message that names a field, or accepted (and, on the
apiserver, reconciled) without an exception: 0 internal errors, 0 crashes, 0 tracebacks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_inputs import SELECTOR_FAULTS, label_cases, schema_paths, workspaces
from hypothesis import HealthCheck, given, settings
from rel_support import LogCapture, fresh_namespace, metric, running_operator, until
from reliability_stack import emit

from workspace_webhooks import workspace_webhooks  # isort: skip  (found through rel_support's path)

from kaito.api.webhook import review
from kaito.api.workspace.validation import validate_workspace
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.runtime import ApiError, Client, NotFoundError, WebhookServerOptions

#: Cases through the function, the webhook decision and the CLI (issue: at least 1,000).
CASES = int(os.environ.get("KAITO_FUZZ_CASES", "1000"))
#: Spoiled label selectors (reserved keys, bad key/value syntax) through function, webhook and CLI.
LABEL_CASES = int(os.environ.get("KAITO_FUZZ_LABEL_CASES", "400"))
#: Of those, how many also go to the real apiserver (each is one HTTP round trip + admission).
API_CASES = int(os.environ.get("KAITO_FUZZ_API_CASES", "250"))
FIELD_WORDS = {str(step) for path in schema_paths() for step in path if isinstance(step, str)} | {
    "apiVersion",
    "kind",
    "metadata",
    "body",
}


def _key(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


@cache
def generated() -> tuple[tuple[dict[str, Any], tuple[str, ...]], ...]:
    """``CASES`` distinct documents, the same on every run (derandomized: a fresh clone and a
    rerun try the same inputs; the mutation steps say how each was made)."""
    out: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {}

    @settings(
        max_examples=CASES * 3,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(workspaces())
    def collect(case: tuple[dict[str, Any], list[str]]) -> None:
        doc, steps = case
        if len(out) < CASES:
            out.setdefault(_key(doc), (doc, tuple(steps)))

    collect()
    assert len(out) >= CASES, f"hypothesis produced only {len(out)} distinct Workspaces"
    return tuple(out.values())


def _names_a_field(text: str) -> bool:
    return any(word in text for word in FIELD_WORDS)


def test_fuzzed_workspaces_through_validation_webhook_and_cli(tmp_path: Path) -> None:
    start = time.monotonic()
    cases = generated()
    accepted = rejected = 0
    verdicts: list[bool] = []
    for doc, steps in cases:
        where = f"case {steps}: {_key(doc)[:400]}"
        result = validate_workspace(doc)
        internal = [e for e in result.errors if "internal validation error" in e.message]
        assert not internal, f"{internal} for {where}"
        for err in result.errors:
            assert err.field and err.field != "<root>" and err.message, f"{err!r} names no field, {where}"
        # the webhook's decision, for a create and for an update of a valid object to this one
        for request in (
            {"uid": "u", "operation": "CREATE", "object": doc},
            {"uid": "u", "operation": "UPDATE", "object": doc, "oldObject": _valid_like(doc)},
        ):
            resp = review({"request": request})["response"]
            assert isinstance(resp.get("allowed"), bool), f"{resp} for {where}"
            if request["operation"] == "CREATE":
                assert resp["allowed"] == result.ok, f"webhook {resp} vs function {result.errors}, {where}"
            if not resp["allowed"]:
                status = resp["status"]
                assert 400 <= status["code"] < 500 and "could not process" not in status["message"], where
                assert all(c["field"] for c in status.get("details", {}).get("causes", [])), where
        verdicts.append(result.ok)
        accepted += result.ok
        rejected += not result.ok

    # the real CLI, as a user runs it, over all of them in one multi-document file
    path = tmp_path / "fuzzed.yaml"
    path.write_text(yaml.safe_dump_all([d for d, _ in cases], allow_unicode=True), encoding="utf-8")
    cli = subprocess.run(
        [sys.executable, "-m", "kaito.cli.main", "validate", "-o", "json", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode in (0, 1), f"kaito validate exited {cli.returncode}: {cli.stderr[-3000:]}"
    assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
    report = json.loads(cli.stdout)
    items = report["items"]
    assert len(items) == len(cases), (len(items), len(cases))
    skipped = 0
    for (doc, steps), item, ok in zip(cases, items, verdicts, strict=True):
        if item["result"] == "skipped":  # another kind in a multi-document file: not a Workspace
            assert doc.get("kind") != "Workspace", item
            skipped += 1
            continue
        assert item["result"] == ("valid" if ok else "rejected"), f"{item} vs function for {steps}"
        for err in item["errors"]:
            field, sep, _ = err.partition(": ")
            assert sep and field and field != "<root>", f"{err!r} names no field ({steps})"
    figures = {
        "suite": "fuzz-validation",
        "cases": len(cases),
        "accepted": accepted,
        "rejected": rejected,
        "cli_skipped_other_kind": skipped,
        "internal_errors": 0,
        "crashes": 0,
        "seconds": round(time.monotonic() - start, 1),
    }
    emit(figures)


def label_generated() -> list[tuple[dict[str, Any], str, str]]:
    """``LABEL_CASES`` Workspaces whose only fault is in the label selector (derandomized)."""
    out: dict[str, tuple[dict[str, Any], str, str]] = {}

    @settings(
        max_examples=LABEL_CASES * 3,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(label_cases())
    def collect(case: tuple[dict[str, Any], str, str]) -> None:
        if len(out) < LABEL_CASES:
            out.setdefault(_key(case[0]), case)

    collect()
    assert len(out) >= LABEL_CASES, f"hypothesis produced only {len(out)} distinct selectors"
    return list(out.values())


def test_fuzzed_label_selectors_are_refused_naming_the_field(tmp_path: Path) -> None:
    """Issue 21 holes 1 and 2: a reserved key (``kaito.sh/workspace`` next to an ordinary one) or
    a key / value / operator Kubernetes refuses, anywhere in the selector, in any base Workspace
    and either version, is refused by the function, the webhook and ``kaito validate``, each
    time with an error at exactly the selector field that holds it, never an internal error."""
    cases = label_generated()
    kinds = {step.split()[0] for _, _, step in cases}
    assert kinds == set(SELECTOR_FAULTS), f"not every selector fault was generated: {kinds}"
    for doc, field, step in cases:
        where = f"{step}: {_key(doc)[:300]}"
        result = validate_workspace(doc)
        assert not result.ok, f"admitted {where}"
        assert not [e for e in result.errors if "internal validation error" in e.message], where
        fields = [e.field for e in result.errors]
        assert field in fields, f"{fields} does not name {field} for {where}"
        assert all(f.startswith("resource.labelSelector") for f in fields), f"{result.errors} for {where}"
        resp = review({"request": {"uid": "u", "operation": "CREATE", "object": doc}})["response"]
        assert resp["allowed"] is False, where
        assert 400 <= resp["status"]["code"] < 500 and field in resp["status"]["message"], (resp, where)
        assert "could not process" not in resp["status"]["message"], where
    path = tmp_path / "selectors.yaml"
    path.write_text(yaml.safe_dump_all([d for d, _, _ in cases], allow_unicode=True), encoding="utf-8")
    cli = subprocess.run(
        [sys.executable, "-m", "kaito.cli.main", "validate", "-o", "json", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 1, f"kaito validate exited {cli.returncode}: {cli.stderr[-3000:]}"
    assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
    items = json.loads(cli.stdout)["items"]
    assert len(items) == len(cases)
    for (_, field, step), item in zip(cases, items, strict=True):
        assert item["result"] == "rejected", (step, item)
        assert any(err.startswith(f"{field}: ") for err in item["errors"]), (step, field, item["errors"])
    emit({"suite": "fuzz-label-selectors", "cases": len(cases), "refused": len(cases), "internal_errors": 0})


def _valid_like(doc: dict[str, Any]) -> dict[str, Any]:
    """A valid Workspace of the same version, as the oldObject of an update."""
    served = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
    return {
        "apiVersion": doc["apiVersion"] if doc.get("apiVersion") in served else "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "fuzz"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


# --------------------------------------------------------------------------- real apiserver


@contextlib.asynccontextmanager
async def _webhook(cluster: Cluster, namespace: str, tmp: Path) -> AsyncIterator[None]:
    """kaito's admission webhook in this process, registered with the real apiserver for this
    test's namespace only (the session cluster is shared)."""
    from kaito.api.webhook import new_webhook_server

    cert, key = cluster.serving_cert("kaito-fuzz-webhook")
    certs = tmp / "certs"
    certs.mkdir()
    shutil.copyfile(cert, certs / "tls.crt")
    shutil.copyfile(key, certs / "tls.key")
    server = new_webhook_server(WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(certs)))
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    async with asyncio.timeout(60):
        await server.wait_started()
    assert cluster.pki is not None
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()

    def hooks(verb: str) -> list[dict[str, Any]]:
        return workspace_webhooks(verb, server.bound_port, ca, namespace, timeout_seconds=30)

    kinds = (("Mutating", "mutate"), ("Validating", "validate"))
    for kind, verb in kinds:
        body = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": f"{kind}WebhookConfiguration",
            "metadata": {"name": f"kaito-fuzz-{verb}-{namespace}"},
            "webhooks": hooks(verb),
        }
        await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=json.dumps(body))
    try:
        yield
    finally:
        for kind, verb in kinds:
            await asyncio.to_thread(
                cluster.kubectl,
                "delete",
                f"{kind.lower()}webhookconfiguration",
                f"kaito-fuzz-{verb}-{namespace}",
                "--ignore-not-found",
            )
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.mark.cluster
async def test_fuzzed_workspaces_through_the_apiserver_and_the_operator(
    reliability_cluster: Cluster, tmp_path: Path
) -> None:
    async with fresh_namespace(reliability_cluster, "fuzz") as namespace:
        await _through_the_apiserver(reliability_cluster, namespace, tmp_path)


async def _through_the_apiserver(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    start = time.monotonic()
    cases = generated()
    step = max(1, len(cases) // API_CASES)
    chosen = list(cases[::step])[:API_CASES]
    accepted: list[str] = []
    rejected = 0
    options = OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0", namespace=namespace)
    with LogCapture("INFO") as logs:
        async with (
            running_operator(kube_cluster.client_configuration(), options) as op,
            _webhook(kube_cluster, namespace, tmp_path),
            Client(kube_cluster.client_configuration()) as api,
        ):
            ctrl = op.workspace.controller
            assert ctrl is not None
            for i, (orig, steps) in enumerate(chosen):
                doc = json.loads(json.dumps(orig))
                meta = doc.get("metadata")
                if isinstance(meta, dict):
                    meta["namespace"] = namespace
                    if meta.get("name") == "fuzz":
                        meta["name"] = f"fz-{i}"
                api_version = doc.get("apiVersion")
                served = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
                version = api_version.split("/")[-1] if api_version in served else "v1beta1"
                where = f"case {i} {steps}: {_key(doc)[:300]}"
                try:
                    created = await api.raw_request(
                        "POST", f"/apis/kaito.sh/{version}/namespaces/{namespace}/workspaces", body=doc
                    )
                except ApiError as exc:
                    assert 400 <= exc.status < 500, f"HTTP {exc.status} {exc.message} for {where}"
                    if exc.status == 409 and "already exists" in exc.message:
                        rejected += 1  # two cases mutated to the same valid name
                        continue
                    text = exc.message + json.dumps((exc.body or {}).get("details", {}))
                    assert _names_a_field(text), f"{exc.status} {exc.message!r} names no field, {where}"
                    assert "could not process" not in text, f"webhook failed on {where}: {text}"
                    rejected += 1
                    continue
                accepted.append(created["metadata"]["name"])
            # everything admitted is reconciled (at least once each) and the queue drains
            await until(
                lambda: metric(op, "reconcile_total", controller="workspace") >= len(accepted)
                and ctrl.queue is not None
                and len(ctrl.queue) == 0,
                f"{len(accepted)} admitted Workspaces to be reconciled",
            )
            panics = metric(op, "reconcile_panics_total", controller="workspace")
            terminal = metric(op, "terminal_reconcile_errors_total", controller="workspace")
            # clean up while the operator runs (it owns the finalizers)
            for name in accepted:
                with contextlib.suppress(NotFoundError):
                    await api.delete(WORKSPACE, name, namespace)

            async def gone() -> bool:
                return not await api.list(WORKSPACE, namespace, cached=False)

            await until(gone, "the admitted Workspaces to be deleted", 120)
    tracebacks = logs.tracebacks()
    assert not tracebacks, "\n".join(tracebacks[:5])
    assert panics == 0 and terminal == 0, (panics, terminal)
    emit(
        {
            "suite": "fuzz-apiserver",
            "cases": len(chosen),
            "admitted": len(accepted),
            "rejected": rejected,
            "controller_exceptions": 0,
            "tracebacks": 0,
            "seconds": round(time.monotonic() - start, 1),
        }
    )
