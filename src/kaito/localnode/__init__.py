"""kaito's local node agent: a kubelet for kaito's own images, so ``make run`` ends with a real answer.

Why it exists: kwok marks pods Running but runs nothing, so on a laptop the seed's last step
(``POST /chat``) could not be tried. The agent owns the Nodes labelled
``kaito.sh/node-agent=local`` (kwok is told to leave those alone), keeps their Lease and Ready
condition, and runs the pods bound to them as host processes, each pod in network, mount, PID
and UTS namespaces of its own, with real probes, restarts, logs and pod IPs that
``kaito local port-forward`` reaches. Every namespace is pinned by a process that dies with the
agent, so a killed agent (or supervisor) leaves no namespace, mount or process behind.
"""

from __future__ import annotations

from typing import Final

from kaito.contract import ANNOTATION_STANDIN

#: Nodes the agent runs for real; kaito.envtest.cluster repeats both names for kwok's selector.
AGENT_NODE_LABEL: Final = "kaito.sh/node-agent"
AGENT_NODE_VALUE: Final = "local"
#: The pod annotation that says the weights are a random-weight stand-in (and why).
STANDIN_ANNOTATION: Final = ANNOTATION_STANDIN
