"""Helpers for the install tests: render config/ with the real kubectl, run ``kaito controller``
as a process with a ServiceAccount token, read the apiserver's audit log, and match every request
against the RBAC rules that were installed."""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from kaito.envtest import Cluster

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "kaito-system"
SA = "kaito-controller"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SA}"
DOCS = REPO / "docs" / "installation.md"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl_binary(cluster: Cluster | None = None) -> str:
    if cluster is not None:
        return str(cluster.assets / "kubectl")
    from kaito.envtest import ensure_assets

    return str(ensure_assets(["kubectl"], build=False) / "kubectl")


def kustomize(path: Path, kubectl: str | None = None) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl or kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


# ------------------------------------------------------------------------------ RBAC rules


@dataclass(frozen=True)
class Grant:
    """One verb on one resource by one rule: the unit of "used at least once"."""

    role: str  # "ClusterRole/name" or "Role/ns/name"
    group: str
    resource: str  # "workspaces" or "workspaces/status"
    verb: str
    namespace: str | None  # a Role's namespace; None: cluster-wide
    names: tuple[str, ...] = ()

    def label(self) -> str:
        res = f"{self.group}/{self.resource}" if self.group else f"core/{self.resource}"
        return f"{self.verb} {res}" + (f" [{','.join(self.names)}]" if self.names else "")


def grants_for(objects: Sequence[dict[str, Any]], subject_ns: str, subject: str) -> list[Grant]:
    """Every (rule, verb, resource) granted to the ServiceAccount by the rendered objects."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    out: list[Grant] = []
    for b in objects:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == subject
            and s.get("namespace") == subject_ns
            for s in b.get("subjects") or ()
        ):
            continue
        ref = b["roleRef"]
        bns = b["metadata"].get("namespace")
        role = roles[(ref["kind"], bns if ref["kind"] == "Role" else None, ref["name"])]
        scope = bns if b["kind"] == "RoleBinding" else None
        label = f"{ref['kind']}/{(bns + '/') if ref['kind'] == 'Role' else ''}{ref['name']}"
        for rule in role.get("rules") or ():
            for g in rule.get("apiGroups") or ():
                for r in rule.get("resources") or ():
                    for v in rule.get("verbs") or ():
                        out.append(Grant(label, g, r, v, scope, tuple(rule.get("resourceNames") or ())))
    return out


@dataclass
class AuditRequest:
    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    code: int
    uri: str

    @classmethod
    def of(cls, ev: dict[str, Any]) -> AuditRequest | None:
        ref = ev.get("objectRef")
        if not ref:
            return None  # non-resource URL (/api, /apis discovery): granted to every user
        res = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        return cls(
            ev["verb"],
            ref.get("apiGroup", ""),
            res,
            ref.get("namespace"),
            ref.get("name"),
            int((ev.get("responseStatus") or {}).get("code") or 0),
            ev.get("requestURI", ""),
        )

    def allowed_by(self, g: Grant) -> bool:
        if (g.group, g.resource, g.verb) != (self.group, self.resource, self.verb):
            return False
        if g.namespace is not None and g.namespace != self.namespace:
            return False
        return not g.names or self.name in g.names


def read_audit(
    path: Path, user: str, since: datetime.datetime | None = None
) -> tuple[list[dict[str, Any]], list[AuditRequest]]:
    """(all events of ``user`` received at or after ``since``, their resource requests),
    deduplicated by auditID."""
    events: dict[str, dict[str, Any]] = {}
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if (ev.get("user") or {}).get("username") != user:
                continue
            received = datetime.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since is not None and received < since:
                continue
            # ResponseComplete wins over ResponseStarted (watches log both).
            prev = events.get(ev["auditID"])
            if prev is None or ev.get("stage") == "ResponseComplete":
                events[ev["auditID"]] = ev
    evs = list(events.values())
    return evs, [r for r in (AuditRequest.of(e) for e in evs) if r is not None]


def documented_grants(text: str) -> dict[tuple[str, str, str], str]:
    """The permissions table of docs/installation.md: (group, resource, verb) -> "why unused"
    (empty when the flow uses it). Rows: | API group | resource | verbs | used by | unused because |"""
    out: dict[tuple[str, str, str], str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[1].startswith("`"):
            continue
        group = cells[0].strip("`")
        group = "" if group == "core" else group
        resource = cells[1].strip("`").split(" ")[0]
        for verb in re.findall(r"`(\w+)`", cells[2]):
            out[(group, resource, verb)] = cells[4]
    return out


# --------------------------------------------------------------------------- the process


def service_account_kubeconfig(cluster: Cluster, path: Path, namespace: str, sa: str) -> Path:
    """A kubeconfig holding only a TokenRequest token for the ServiceAccount and the cluster CA."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout.strip()
    assert cluster.pki is not None
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.server, "certificate-authority": str(cluster.pki.ca_cert)},
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


@dataclass
class ControllerProcess:
    """``kaito controller`` as a user runs it, out of cluster, with its own ports."""

    kubeconfig: Path
    workdir: Path
    name: str
    args: list[str] = field(default_factory=list)
    health_port: int = 0
    metrics_port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        kaito = Path(sys.executable).with_name("kaito")
        argv = [
            str(kaito),
            "controller",
            f"--kubeconfig={self.kubeconfig}",
            f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            "--log-format=json",
            *self.args,
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        if not self.alive():
            raise AssertionError(
                f"{self.name} exited ({self.popen and self.popen.returncode}):\n{self.log_tail()}"
            )
        return self._get(self.health_port, "/readyz")[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        code, text = self._get(self.metrics_port, "/metrics")
        if code != 200:
            return -1.0
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        code = None
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        elif self.popen is not None:
            code = self.popen.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def wait(check: Any, what: str, timeout: float = 180.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def objects_by_kind(objs: Iterable[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in kinds]


def env_without_kube() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}


def install(cluster: Cluster, objects: list[dict[str, Any]], webhook_port: int | None) -> dict[str, Any]:
    """Apply the render except the Deployment (the controller runs out of cluster); webhook
    configurations point at the loopback port instead of the Service. Returns the Deployment."""
    deployment: dict[str, Any] = {}
    out = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            deployment = obj
            continue
        if obj["kind"] in WEBHOOK_KINDS:
            if webhook_port is None:
                continue
            obj = copy.deepcopy(obj)
            for hook in obj["webhooks"]:
                svc = hook["clientConfig"].pop("service")
                assert (svc["name"], svc["namespace"]) == ("kaito-webhook-service", NAMESPACE), svc
                hook["clientConfig"]["url"] = f"https://127.0.0.1:{webhook_port}{svc['path']}"
        out.append(obj)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(out))
    cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
    return deployment


CHART = REPO / "charts" / "kaito"


#: The image config/ (kustomize) names: the local registry's (docs/images.md).
LOCAL_IMAGE = "localhost:5000/kaito/workspace"


def helm_render(helm: str, *sets: str, values: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """``helm template`` of charts/kaito as release "kaito" in kaito-system (values files first,
    then the ``--set`` strings, as helm orders them)."""
    cmd = [helm, "template", "kaito", str(CHART), "-n", NAMESPACE, "--kube-version", "1.37.2"]
    for v in values:
        cmd += ["-f", str(v)]
    # The chart requires image.repository (kaito publishes no image); config/ names the local one.
    cmd += ["--set", f"image.repository={LOCAL_IMAGE}"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def helm_install_objects(helm: str) -> list[dict[str, Any]]:
    """What ``helm install --create-namespace`` puts in the cluster: crds/ then the templates."""
    crds = [
        d for f in sorted((CHART / "crds").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d
    ]
    return crds + helm_render(helm, "createNamespace=true")
