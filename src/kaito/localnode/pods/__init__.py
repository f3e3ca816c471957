"""The pods the local node agent runs: :class:`PodWorker` and its parts, one module each.

``worker`` (lifecycle), ``supervision`` (restarts), ``probes``, ``status``, ``volumes``, ``env``,
``identity`` (securityContext), ``launch`` (the sandbox's container spec) and ``sources`` (the
ConfigMaps and Secrets a pod reads). The names below are the ones the agent and tests use.
"""

from kaito.localnode.pods.env import expand
from kaito.localnode.pods.identity import RunAs, run_as
from kaito.localnode.pods.sources import ConfigError
from kaito.localnode.pods.status import now
from kaito.localnode.pods.volumes import secret_file_mode, subpath
from kaito.localnode.pods.worker import PodWorker

__all__ = ["ConfigError", "PodWorker", "RunAs", "expand", "now", "run_as", "secret_file_mode", "subpath"]
