"""Which claims a node option applies to: ``--local-nodes`` and ``--real-nodes`` selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kaito.api.meta import selector_matches
from kaito.nodes import claim_node_labels

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ClaimSelector:
    """Which claims a node option applies to: ``--local-nodes`` (a Node that kaito's local node
    agent runs instead of kwok) or ``--real-nodes`` (an adopted real node).

    ``selector`` is a ``metav1.LabelSelector`` (``matchLabels`` / ``matchExpressions``) evaluated
    on the claim's labels; an empty one matches every claim, as in Kubernetes.
    """

    selector: dict[str, Any] = field(default_factory=dict)

    def matches(self, nodeclaim: dict[str, Any]) -> bool:
        """Whether the claim's Node goes to the agent, judged on the labels that Node will carry
        (the claim's labels, with the Workspace's matchLabels, and its single-valued requirements
        such as the instance type)."""
        return selector_matches(self.selector, claim_node_labels(nodeclaim))

    @classmethod
    def parse(cls, text: str, flag: str = "--local-nodes") -> ClaimSelector:
        """``all``, or comma-separated ``k=v``, ``k!=v``, ``k`` (exists), ``!k``.

        Raises ValueError naming ``flag``, the bad term and the accepted forms.
        """
        text = text.strip()
        if text == "all":
            return cls()
        match: dict[str, str] = {}
        exprs: list[dict[str, Any]] = []
        for raw in text.split(","):
            term = raw.strip()
            key, op, value = _split_term(term)
            if not _LABEL_KEY.match(key) or (op in ("=", "!=") and not _LABEL_VALUE.match(value)):
                raise ValueError(
                    f"{flag}: {term!r} is not a selector term; use all, or key=value, "
                    "key!=value, key or !key separated by commas (e.g. apps=phi-3)"
                )
            if op == "=":
                match[key] = value
            elif op == "!=":
                exprs.append({"key": key, "operator": "NotIn", "values": [value]})
            elif op == "!":
                exprs.append({"key": key, "operator": "DoesNotExist"})
            else:
                exprs.append({"key": key, "operator": "Exists"})
        selector: dict[str, Any] = {}
        if match:
            selector["matchLabels"] = match
        if exprs:
            selector["matchExpressions"] = exprs
        return cls(selector)


#: The names the two flags have always had.
LocalNodes = ClaimSelector
RealNodes = ClaimSelector


def _split_term(term: str) -> tuple[str, str, str]:
    if "!=" in term:
        key, _, value = term.partition("!=")
        return key.strip(), "!=", value.strip()
    if "=" in term:
        key, _, value = term.partition("=")
        return key.strip().rstrip("="), "=", value.strip().lstrip("=")
    if term.startswith("!"):
        return term[1:].strip(), "!", ""
    return term, "exists", ""


__all__ = ["ClaimSelector", "LocalNodes", "RealNodes"]
