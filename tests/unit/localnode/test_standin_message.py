"""The Workspace's InferenceReady message carries the local node's stand-in note, so
`kubectl get workspace -o yaml` says the answers come from random weights."""

from __future__ import annotations

from typing import Any

from kaito.api import names
from kaito.contract import ANNOTATION_STANDIN
from kaito.controllers.workspace.status import inference_check


def _sts() -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "currentRevision": "r", "updateRevision": "r",
                   "readyReplicas": 1, "updatedReplicas": 1},
    }  # fmt: skip


def _pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "ws-0", "annotations": {names.ANNOTATION_REVISION: "rev", **annotations}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_stand_in_note_in_inference_ready() -> None:
    check = inference_check(
        _sts(), [_pod({ANNOTATION_STANDIN: "random-weight stand-in: no local weights"})], "rev"
    )
    assert check.ok and check.reason == "InferenceReady"
    assert check.message.endswith("; random-weight stand-in: no local weights")


def test_real_weights_keep_the_plain_message() -> None:
    assert inference_check(_sts(), [_pod({})], "rev").message == "1 of 1 inference pods are Ready"
