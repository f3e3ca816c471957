"""``--feature-gates``: upstream Kaito's gate names, parsed into the gates kaito implements.

Why refuse rather than ignore: a gate a user sets is a behaviour they expect. Upstream Kaito
v0.12 knows ten gates (pkg/featuregates); kaito implements four of them: ``vLLM`` (its only
inference runtime, which must stay on), ``enableInferenceSetController`` (on by default, as
upstream; off leaves InferenceSets alone, e.g. on a cluster without their CRD), and ``enableMIG``
and ``enableAccelerator`` (off by default, as upstream: they admit ``resource.partition`` in its
``mig`` and ``accelerator`` modes). A manifest carried over from upstream that turns on another
one (ModelMirror, ...) would silently get different behaviour if the gate were accepted and
dropped, so turning one on is refused at start with a line that says so.
Turning one off is accepted: kaito lacks the feature, so "off" is exactly what it does, and a
values file copied from upstream that lists its gates as false keeps working. A name neither
project knows is refused with the list of known ones.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The gates kaito implements, by upstream's names.
VLLM = "vLLM"
INFERENCE_SET = "enableInferenceSetController"
MIG = "enableMIG"
ACCELERATOR = "enableAccelerator"
IMPLEMENTED = (VLLM, INFERENCE_SET, MIG, ACCELERATOR)
#: Each implemented gate's default, as upstream's.
DEFAULTS: dict[str, bool] = {VLLM: True, INFERENCE_SET: True, MIG: False, ACCELERATOR: False}
#: Upstream Kaito v0.12's other gates (pkg/featuregates), which kaito does not implement, each
#: with what to use instead where kaito has an equivalent.
UNIMPLEMENTED: dict[str, str] = {
    "disableNodeAutoProvisioning": "use --node-provisioner byo for existing nodes",
    "gatewayAPIInferenceExtension": "",
    "enableMultiRoleInferenceController": "",
    "ModelMirror": "",
    "ModelStreaming": "",
    "enableBaseImageAutoUpgrade": "",
}
#: Every gate name kaito recognises, in the order the error message lists them.
KNOWN = (*IMPLEMENTED, *UNIMPLEMENTED)


@dataclass(frozen=True)
class FeatureGates:
    """The gates, after ``--feature-gates`` was checked; every field is read by the operator."""

    #: vLLM is the inference runtime (upstream's ``vLLM`` gate, on by default). kaito has no
    #: other runtime, so it cannot be turned off; ``build_operator`` refuses False.
    vllm: bool = True
    #: Run the InferenceSet controller (upstream's ``enableInferenceSetController``, on by
    #: default). Its informer needs the InferenceSet CRD, so a cluster without it turns this off.
    inference_set: bool = True
    #: Admit ``resource.partition.mode: mig`` (upstream's ``enableMIG``, off by default): the
    #: pod asks for one ``nvidia.com/mig-<profile>`` slice. Read by the webhook.
    mig: bool = False
    #: Admit ``resource.partition.mode: accelerator`` (upstream's ``enableAccelerator``, off by
    #: default): the pod asks for ``count`` whole GPUs. Read by the webhook.
    accelerator: bool = False

    def check(self) -> None:
        """ValueError naming the gate when a value asks for something kaito cannot do."""
        if not self.vllm:
            raise ValueError(f"{VLLM}=false is not supported: kaito's inference runtime is vLLM")


def parse_feature_gates(text: str) -> FeatureGates:
    """``a=true,b=false`` over the defaults. A malformed pair, an unknown gate and a known gate
    kaito does not implement are each a ValueError of one line naming the gate."""
    values = dict(DEFAULTS)
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or value.lower() not in ("true", "false"):
            raise ValueError(f"{item!r} is not gate=true|false")
        if name in UNIMPLEMENTED:
            if value.lower() == "false":
                continue  # off is what kaito does without the feature
            hint = UNIMPLEMENTED[name]
            raise ValueError(
                f"gate {name}=true is upstream Kaito's but kaito does not implement it; "
                "remove it or set it false" + (f" ({hint})" if hint else "")
            )
        if name not in IMPLEMENTED:
            raise ValueError(
                f"unknown gate {name!r}; known: {', '.join(KNOWN)} "
                f"(kaito implements {', '.join(IMPLEMENTED)})"
            )
        values[name] = value.lower() == "true"
    gates = FeatureGates(
        vllm=values[VLLM],
        inference_set=values[INFERENCE_SET],
        mig=values[MIG],
        accelerator=values[ACCELERATOR],
    )
    gates.check()
    return gates


__all__ = [
    "ACCELERATOR",
    "DEFAULTS",
    "IMPLEMENTED",
    "INFERENCE_SET",
    "KNOWN",
    "MIG",
    "UNIMPLEMENTED",
    "VLLM",
    "FeatureGates",
    "parse_feature_gates",
]
