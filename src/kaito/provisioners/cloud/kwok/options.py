"""Settings of the ``kwok`` cloud: which claims' Nodes are run for real instead of faked.

Each field is a flag of ``kaito node-provisioner`` (and, for the in-process node-provisioner, of
``kaito controller``) with the same name; its docstring is that flag's help text.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaito.provisioners.cloud.kwok.selector import ClaimSelector


@dataclass(frozen=True)
class KwokOptions:
    """Which claims' Nodes the ``kwok`` cloud hands to a real kubelet; the rest kwok fakes."""

    local_nodes: str = ""
    """kwok cloud: claims whose nodes kaito's local node agent runs for real, as a label selector
    over the node's labels (all | k=v,k!=v,k,!k; e.g. apps=phi-3); empty: none."""
    real_nodes: str = ""
    """kwok cloud: claims served by adopting an idle real node (label kaito.sh/kubelet=real,
    kaito local up --node real) instead of making one, as a label selector over the node's labels
    (all | k=v,k!=v,k,!k); checked before local nodes; empty: none."""

    def local_selector(self) -> ClaimSelector | None:
        """``local_nodes`` parsed; ValueError naming ``--local-nodes`` when malformed."""
        return ClaimSelector.parse(self.local_nodes, "--local-nodes") if self.local_nodes else None

    def real_selector(self) -> ClaimSelector | None:
        """``real_nodes`` parsed; ValueError naming ``--real-nodes`` when malformed."""
        return ClaimSelector.parse(self.real_nodes, "--real-nodes") if self.real_nodes else None

    def check(self) -> None:
        """ValueError (naming the flag and the accepted forms) before anything starts."""
        self.local_selector()
        self.real_selector()


__all__ = ["KwokOptions"]
