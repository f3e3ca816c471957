"""Workspace status: conditions, state, worker nodes, and the first real failure.

Pure functions over cached objects, so the reconciler can compute the whole status, compare it
with what is stored and write only on a difference. Messages name the first failure a user
can act on (not enough nodes, an image that cannot be pulled, a crash loop, the scheduler's
reason for an unschedulable pod) and stay constant while nothing changes, so waiting costs no
status writes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaito.api import names
from kaito.api.workspace import api_key_secret_of, enable_lb_of
from kaito.contract import ANNOTATION_STANDIN
from kaito.contract.urls import redact_urls
from kaito.runtime import get_condition, remove_condition, set_condition

Obj = dict[str, Any]

#: Container waiting reasons that will not fix themselves without a change by someone.
FAILURE_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


#: Label the StatefulSet controller puts on each pod: the ControllerRevision of its template.
REVISION_HASH_LABEL = "controller-revision-hash"


@dataclass
class Check:
    """One condition's verdict."""

    ok: bool
    reason: str
    message: str
    #: A real failure (as opposed to "still in progress"): a Warning event and state Failed.
    failed: bool = False

    def __post_init__(self) -> None:
        # Messages quote container termination messages and kubelet errors, which may hold a
        # presigned dataset URL; every condition message and Warning event is built from a Check,
        # so this is the one place a URL's query string is kept out of the Workspace's status.
        self.message = redact_urls(self.message)


@dataclass
class Outcome:
    resource: Check
    inference: Check | None = None
    extra_conditions: list[Obj] = field(default_factory=list)
    worker_nodes: list[str] = field(default_factory=list)
    target_node_count: int | None = None
    deleting: Check | None = None
    #: InferenceEndpointSecured (only with kaito.sh/enablelb); None removes the condition.
    endpoint: Check | None = None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Seconds a pod may wait for the scheduler before "cannot be scheduled" is reported as the
#: failure: the scheduler retries with a backoff of up to 10 s, and while many pods arrive at
#: once (or a node's status catches up) a pod can be refused a few times and then placed. Not
#: reporting those keeps a Workspace's status (and its Events) from flapping.
UNSCHEDULABLE_GRACE_S = 30.0


def _since(cond: Obj) -> float | None:
    raw = cond.get("lastTransitionTime")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _unschedulable(pod: Obj) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return dict(cond)
    return None


def unschedulable_recheck(pods: list[Obj], now: float) -> float | None:
    """Seconds until an unschedulable pod's grace period ends (when to look again), or None."""
    waits = []
    for pod in pods:
        cond = _unschedulable(pod)
        since = _since(cond) if cond is not None else None
        if since is not None and now - since < UNSCHEDULABLE_GRACE_S:
            waits.append(since + UNSCHEDULABLE_GRACE_S - now)
    return max(min(waits), 0.5) if waits else None


def pod_failure(pods: list[Obj], now: float | None = None) -> Check | None:
    """The first pod problem a user must fix, in pod-name order. With ``now``, a pod refused by
    the scheduler counts only after ``UNSCHEDULABLE_GRACE_S``."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for kind in ("initContainerStatuses", "containerStatuses"):
            for cs in status.get(kind) or ():
                waiting = (cs.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason")
                if reason in FAILURE_REASONS:
                    msg = waiting.get("message") or ""
                    what = "init container" if kind == "initContainerStatuses" else "container"
                    detail = f": {msg}" if msg else ""
                    return Check(
                        False,
                        reason,
                        _short(f"pod {name}: {what} {cs.get('name')} is in {reason}{detail}"),
                        failed=True,
                    )
        cond = _unschedulable(pod)
        if cond is not None:
            since = _since(cond)
            if not (now is not None and since is not None and now - since < UNSCHEDULABLE_GRACE_S):
                return Check(
                    False,
                    "PodUnschedulable",
                    _short(f"pod {name} cannot be scheduled: {cond.get('message') or 'no reason given'}"),
                    failed=True,
                )
    return None


def endpoint_check(annotations: dict[str, str] | None) -> Check | None:
    """InferenceEndpointSecured, or None without a LoadBalancer: ``kaito.sh/enablelb`` puts the
    model on an external address, which should not serve anyone who reaches it without a key.
    A warning, not a failure: upstream's enablelb is a testing switch and keeps working."""
    if not enable_lb_of(annotations):
        return None
    try:
        ref = api_key_secret_of(annotations)
    except ValueError:
        ref = None  # the workload reports the bad annotation itself (InvalidAPIKeySecret)
    if ref is not None:
        return Check(
            True, "APIKeyRequired", f"the LoadBalancer requires the API key in Secret {ref[0]} (key {ref[1]})"
        )
    return Check(
        False,
        UNAUTHENTICATED_LB,
        f"{names.ANNOTATION_ENABLE_LB} exposes the inference server on an external address with no API "
        f"key: anyone who reaches it can run the model; set {names.ANNOTATION_API_KEY_SECRET}: "
        "<secret-name>[/<key>] to require one",
    )


UNAUTHENTICATED_LB = "UnauthenticatedLoadBalancer"


def inference_check(sts: Obj | None, pods: list[Obj], revision: str, now: float | None = None) -> Check:
    """Ready when every replica of the current revision is Ready; else the first failure, else
    a steady 'waiting' message."""
    if sts is None:
        return Check(False, "WorkloadPending", "the inference StatefulSet is not created yet")
    spec, st = sts.get("spec") or {}, sts.get("status") or {}
    want = int(spec.get("replicas") or 0)
    current_generation = int(st.get("observedGeneration") or 0) >= int(
        (sts.get("metadata") or {}).get("generation") or 0
    )
    rolled = st.get("updateRevision") is not None and st.get("currentRevision") == st.get("updateRevision")
    ours = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_REVISION) == revision
    ]
    ready_ours = sum(1 for p in ours if _pod_ready(p))
    # The StatefulSet's own counts lag its pods by one status write of the StatefulSet
    # controller, which is rate-limited and slow when many roll at once: pods of the update
    # revision (their controller-revision-hash label), all Ready, are the same fact sooner.
    update_revision = st.get("updateRevision")
    ready_updated = sum(
        1
        for p in ours
        if update_revision
        and ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL) == update_revision
        and _pod_ready(p)
    )
    sts_says = (
        rolled and int(st.get("readyReplicas") or 0) >= want and int(st.get("updatedReplicas") or 0) >= want
    )
    if current_generation and ready_ours >= want and (sts_says or ready_updated >= want):
        # kaito's local node serves a random-weight stand-in without local weights: say so here too
        notes = sorted(
            str(a[ANNOTATION_STANDIN])
            for p in ours
            if ANNOTATION_STANDIN in (a := (p.get("metadata") or {}).get("annotations") or {})
        )
        note = f"; {notes[0]}" if notes else ""
        return Check(True, "InferenceReady", f"{want} of {want} inference pods are Ready{note}")
    failure = pod_failure(pods, now)
    if failure is not None:
        return failure
    return Check(
        False,
        "InferencePending",
        f"waiting for {want} inference pod(s) of revision {revision} to become Ready",
    )


def _pod_ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_nodes(pods: list[Obj]) -> list[str]:
    return sorted({p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")})


def nodes_check(resource: Check) -> Check:
    """Upstream's NodesReady from the provisioner's verdict on the nodes: the same truth as
    ResourceReady, under upstream's reasons (``NodesReady`` / ``NodeNotReady``), and written in the
    same status update, so it costs no extra write."""
    return Check(resource.ok, "NodesReady" if resource.ok else "NodeNotReady", resource.message)


def desired_status(ws: Obj, out: Outcome) -> Obj:
    """The full status the Workspace should have now (a modified copy of the cached object)."""
    new = copy.deepcopy(ws)
    status = new.setdefault("status", {})
    gen = (ws.get("metadata") or {}).get("generation")

    def put(type_: str, check: Check) -> None:
        set_condition(new, type_, check.ok, check.reason, check.message, observed_generation=gen)

    for cond in out.extra_conditions:
        set_condition(
            new,
            cond["type"],
            cond["status"],
            cond.get("reason", ""),
            cond.get("message", ""),
            observed_generation=gen,
        )
    put(names.NODES_READY, nodes_check(out.resource))
    put(names.RESOURCE_READY, out.resource)
    if out.inference is not None:
        put(names.INFERENCE_READY, out.inference)
    else:
        put(
            names.INFERENCE_READY,
            Check(False, "WaitingForResources", "the workload starts once the nodes are Ready"),
        )
    if out.endpoint is not None:
        put(names.INFERENCE_ENDPOINT_SECURED, out.endpoint)
    else:
        remove_condition(new, names.INFERENCE_ENDPOINT_SECURED)
    inference = out.inference
    ready = out.resource.ok and inference is not None and inference.ok
    first = next((c for c in (out.resource, inference) if c is not None and not c.ok), None)
    summary = (
        Check(True, "WorkspaceReady", "the inference service is Ready")
        if ready
        else Check(False, first.reason if first else "Pending", first.message if first else "waiting")
    )
    put(names.WORKSPACE_SUCCEEDED, summary)
    put(names.WORKSPACE_READY, summary)
    # Upstream's NotReady: an inference service that was serving (Ready) and now is not.
    established = (ws.get("status") or {}).get("state") in (names.STATE_READY, names.STATE_NOT_READY)
    if out.deleting is not None:
        status["state"] = names.STATE_DELETING
        put(names.WORKSPACE_READY, out.deleting)
        put(names.WORKSPACE_SUCCEEDED, out.deleting)
        gone = out.deleting
        set_condition(new, names.WORKSPACE_DELETING, True, gone.reason, gone.message, observed_generation=gen)
    elif ready:
        status["state"] = names.STATE_READY
    elif any(c is not None and c.failed for c in (out.resource, inference)):
        status["state"] = names.STATE_FAILED
    elif established:
        status["state"] = names.STATE_NOT_READY
    elif not out.resource.ok:
        status["state"] = names.STATE_PENDING
    else:
        status["state"] = names.STATE_RUNNING
    if out.worker_nodes:
        status["workerNodes"] = out.worker_nodes
    else:
        status.pop("workerNodes", None)
    if out.target_node_count is not None:
        status["targetNodeCount"] = out.target_node_count
    if gen is not None:
        status["observedGeneration"] = gen
    return new


def deleting_status(ws: Obj, message: str) -> Obj:
    new = copy.deepcopy(ws)
    status = new.setdefault("status", {})
    status["state"] = names.STATE_DELETING
    gen = (ws.get("metadata") or {}).get("generation")
    for type_ in (names.WORKSPACE_READY, names.WORKSPACE_SUCCEEDED):
        set_condition(new, type_, False, "Deleting", message, observed_generation=gen)
    set_condition(new, names.WORKSPACE_DELETING, True, "Deleting", message, observed_generation=gen)
    return new


def transitions(old: Obj, new: Obj) -> list[tuple[str, Obj]]:
    """Conditions whose status or reason changed: (type, new condition)."""
    out = []
    for cond in (new.get("status") or {}).get("conditions") or ():
        prev = get_condition(old, cond["type"])
        if (
            prev is None
            or prev.get("status") != cond.get("status")
            or prev.get("reason") != cond.get("reason")
        ):
            out.append((cond["type"], cond))
    return out
