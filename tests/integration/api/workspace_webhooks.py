"""The admission webhook entries a test registers for kaito's Workspace webhook server: one per
served version at its own path (as kubebuilder generates them), limited to the test's namespace
because the session cluster is shared with other tests."""

from __future__ import annotations

from typing import Any


def workspace_webhooks(
    verb: str, port: int, ca_bundle: str, namespace: str, *, timeout_seconds: int = 10
) -> list[dict[str, Any]]:
    """``verb`` is ``validate`` or ``mutate``; the server listens on 127.0.0.1:``port``."""
    return [
        {
            "name": f"{verb}-{version}.workspace.kaito.sh",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/{verb}-kaito-sh-{version}-workspace",
                "caBundle": ca_bundle,
            },
            "rules": [
                {
                    "apiGroups": ["kaito.sh"],
                    "apiVersions": [version],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["workspaces"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds,
        }
        for version in ("v1alpha1", "v1beta1")
    ]
