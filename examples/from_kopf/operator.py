"""The Greeting operator of docs/from-kopf.md, written on kaito.runtime.

It does what the page's kopf handlers do: a ``Greeting`` (examples/greeting/crd.yaml) gets a
ConfigMap ``greeting-<name>`` holding ``"<message>, <who>!"``, a ``Ready`` condition and
``status.configMap``; deleting the Greeting runs a clean-up step behind a finalizer. Where kopf
calls one handler per event kind, this reconciler is called with a name and reads the object's
current state, so create, update, resume and "someone deleted my ConfigMap" are one code path.

Run against any cluster::

    kubectl apply -f examples/greeting/crd.yaml
    python examples/from_kopf/operator.py --kubeconfig ~/.kube/config --namespace default

tests/integration/runtime/test_example_from_kopf.py runs it on a real kube-apiserver.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kaito.runtime import (
    CONFIGMAP,
    GVK,
    NORMAL,
    EventRecorder,
    Manager,
    NotFoundError,
    Request,
    Result,
    TerminalError,
    add_finalizer,
    finalizers_patch,
    generation_changed,
    is_being_deleted,
    load_configuration,
    remove_finalizer,
    set_condition,
    set_controller_reference,
    set_observed_generation,
)

GREETING = GVK("example.kaito.sh", "v1alpha1", "Greeting")
FINALIZER = "example.kaito.sh/from-kopf"


class GreetingReconciler:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.events = EventRecorder(manager.client, "greeting-from-kopf")

    async def reconcile(self, req: Request) -> Result | None:
        try:
            greeting = await self.client.get(GREETING, req.name, req.namespace)
        except NotFoundError:
            return None  # gone; the garbage collector deletes the owned ConfigMap
        if is_being_deleted(greeting):
            return await self.finalize(greeting)
        if add_finalizer(greeting, FINALIZER):  # kopf adds its finalizer for on.delete too
            greeting = await self.client.patch(GREETING, req.name, finalizers_patch(greeting), req.namespace)

        spec = greeting["spec"]
        if "\n" in spec["message"]:
            raise TerminalError("spec.message must be one line")  # kopf.PermanentError
        text = f"{spec['message']}, {spec.get('who', 'world')}!"
        name = f"greeting-{req.name}"
        await self.ensure_configmap(greeting, name, text)

        changed = set_condition(greeting, "Ready", True, "ConfigMapReady", f"greeting is {text!r}")
        changed |= set_observed_generation(greeting)
        if greeting["status"].get("configMap") != name:
            greeting["status"]["configMap"] = name
            changed = True
        if changed:  # a converged object costs no write
            await self.client.update_status(greeting)
        return None

    async def ensure_configmap(self, greeting: dict[str, Any], name: str, text: str) -> None:
        ns = greeting["metadata"]["namespace"]
        try:
            current = await self.client.get(CONFIGMAP, name, ns)
        except NotFoundError:
            child = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns},
                "data": {"greeting": text},
            }
            set_controller_reference(greeting, child)  # kopf.adopt(child)
            await self.client.create(child)
            await self.events.event(greeting, NORMAL, "Created", f"ConfigMap {name}")  # kopf.info
            return
        if current.get("data", {}).get("greeting") != text:
            await self.client.patch(CONFIGMAP, name, {"data": {"greeting": text}}, ns)

    async def finalize(self, greeting: dict[str, Any]) -> Result | None:
        await self.events.event(greeting, NORMAL, "Deleting", "goodbye")
        if remove_finalizer(greeting, FINALIZER):
            meta = greeting["metadata"]
            await self.client.patch(GREETING, meta["name"], finalizers_patch(greeting), meta["namespace"])
        return None


def build_manager(config: Any, **options: Any) -> Manager:
    manager = Manager(config, **options)
    (
        manager.builder()
        .named("greeting-from-kopf")
        .for_(GREETING, predicates=[generation_changed()])
        .owns(CONFIGMAP)
        .complete(GreetingReconciler(manager))
    )
    return manager


async def main(kubeconfig: str | None, namespace: str | None) -> None:
    config = await load_configuration(kubeconfig)
    await build_manager(config, namespace=namespace).start()  # returns on SIGTERM / SIGINT


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the Greeting operator of docs/from-kopf.md")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--namespace", help="watch one namespace (default: all)")
    args = parser.parse_args()
    asyncio.run(main(args.kubeconfig, args.namespace))
