"""Greeting operator: the smallest complete kaito.runtime operator.

A ``Greeting`` (example.kaito.sh/v1alpha1) asks for a ConfigMap ``greeting-<name>`` whose
``data.greeting`` is ``"<message>, <who>!"``. The operator shows every piece of the library:

* ``for_(Greeting, generation_changed())`` — status writes do not retrigger it;
* ``owns(ConfigMap)`` — editing or deleting the child brings the owner back (self-healing);
* a finalizer, a controller owner reference, conditions with observedGeneration, Events;
* level-triggered and idempotent: at steady state a reconcile reads only from the cache and
  makes zero API requests.

Run against any cluster::

    kubectl apply -f examples/greeting/crd.yaml
    python -m examples.greeting.operator --kubeconfig ~/.kube/config
"""

from __future__ import annotations

import argparse
import asyncio
import copy
from typing import Any

from kaito.runtime import (
    GVK,
    NORMAL,
    WARNING,
    ConflictError,
    Controller,
    EventRecorder,
    LeaderElectionOptions,
    Manager,
    NotFoundError,
    Request,
    Result,
    TerminalError,
    conditions,
    configure_logging,
    finalizers,
    generation_changed,
    get_logger,
    load_configuration,
    ownerrefs,
)

GREETING = GVK("example.kaito.sh", "v1alpha1", "Greeting")
CONFIGMAP = GVK("", "v1", "ConfigMap")
FINALIZER = "example.kaito.sh/greeting"
FIELD_MANAGER = "greeting-operator"

log = get_logger("greeting")


def child_name(greeting_name: str) -> str:
    return f"greeting-{greeting_name}"


class GreetingReconciler:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.events = EventRecorder(manager.client, "greeting-operator")
        self.controller: Controller | None = None  # set by build_manager (tests enqueue through it)

    async def reconcile(self, req: Request) -> Result | None:
        try:
            # copy=False: a shared read-only view; we copy only when we are about to modify.
            g = await self.client.get(GREETING, req.name, req.namespace, copy=False)
        except NotFoundError:
            return None  # deleted; the ConfigMap goes with it through garbage collection
        if finalizers.is_being_deleted(g):
            return await self._finalize(g)
        if not finalizers.has_finalizer(g, FINALIZER):
            g = copy.deepcopy(g)
            finalizers.add_finalizer(g, FINALIZER)
            g = await self.client.patch(
                GREETING, req.name, finalizers.finalizers_patch(g), req.namespace, patch_type="merge"
            )
        spec = g.get("spec") or {}
        message = spec.get("message") or ""
        if "\n" in message:
            # Retrying cannot fix a bad spec: report it and wait for the next edit.
            await self._set_status(g, ready=False, reason="InvalidMessage", msg="message must be one line")
            raise TerminalError("spec.message contains a newline")
        text = f"{message}, {spec.get('who', 'world')}!"
        await self._ensure_configmap(g, text)
        await self._set_status(g, ready=True, reason="ConfigMapReady", msg=f"greeting is {text!r}")
        return None

    async def _ensure_configmap(self, g: dict[str, Any], text: str) -> None:
        ns, name = g["metadata"]["namespace"], child_name(g["metadata"]["name"])
        try:
            cm = await self.client.get(CONFIGMAP, name, ns, copy=False)
        except NotFoundError:
            cm = None
        if cm is None:
            desired: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "greeting"},
                },
                "data": {"greeting": text},
            }
            ownerrefs.set_controller_reference(g, desired)
            await self.client.create(desired)
            await self.events.event(g, NORMAL, "Created", f"created ConfigMap {name}")
            return
        if not ownerrefs.is_controlled_by(cm, g):
            await self.events.event(g, WARNING, "NotOwned", f"ConfigMap {name} exists and is not ours")
            raise TerminalError(f"ConfigMap {name} is owned by someone else")
        if (cm.get("data") or {}).get("greeting") != text:
            await self.client.patch(CONFIGMAP, name, {"data": {"greeting": text}}, ns, patch_type="merge")
            await self.events.event(g, NORMAL, "Updated", f"updated ConfigMap {name}")

    async def _set_status(self, g: dict[str, Any], *, ready: bool, reason: str, msg: str) -> None:
        new = copy.deepcopy(g)
        changed = conditions.set_condition(new, "Ready", ready, reason, msg)
        changed |= conditions.set_observed_generation(new)
        cm_name = child_name(g["metadata"]["name"])
        if new["status"].get("configMap") != cm_name:
            new["status"]["configMap"] = cm_name
            changed = True
        if changed:  # converged objects cost no write
            try:
                await self.client.update_status(new)
            except ConflictError:
                raise  # stale cache; the rate-limited retry re-reads it
        return None

    async def _finalize(self, g: dict[str, Any]) -> Result | None:
        if finalizers.has_finalizer(g, FINALIZER):
            g = copy.deepcopy(g)
            await self.events.event(g, NORMAL, "Deleting", "greeting is being deleted")
            finalizers.remove_finalizer(g, FINALIZER)
            await self.client.patch(
                GREETING, g["metadata"]["name"], finalizers.finalizers_patch(g), g["metadata"]["namespace"]
            )
        return None


def build_manager(config: Any, **manager_options: Any) -> tuple[Manager, GreetingReconciler]:
    mgr = Manager(config, **manager_options)
    rec = GreetingReconciler(mgr)
    rec.controller = (
        mgr.builder()
        .named("greeting")
        .for_(GREETING, predicates=[generation_changed()])
        .owns(CONFIGMAP)
        .with_options(max_concurrent_reconciles=4)
        .complete(rec)
    )
    return mgr, rec


async def _main(args: argparse.Namespace) -> None:
    cfg = await load_configuration(args.kubeconfig)
    le = (
        LeaderElectionOptions(name="greeting-operator", namespace=args.lease_namespace)
        if args.leader_elect
        else None
    )
    mgr, _ = build_manager(
        cfg,
        leader_election=le,
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
    )
    await mgr.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--leader-elect", action="store_true")
    parser.add_argument("--lease-namespace", default="default")
    parser.add_argument("--metrics-bind-address", default=":8080")
    parser.add_argument("--health-probe-bind-address", default=":8081")
    parser.add_argument("--log-format", choices=["json", "console"], default="console")
    args = parser.parse_args()
    configure_logging(args.log_format)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
