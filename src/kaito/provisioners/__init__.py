"""NodeProvisioner backends, chosen by name (``--node-provisioner``) in :mod:`kaito.operator`.

Every backend is registered in :mod:`kaito.provisioners.registry` with its own typed options
dataclass (:mod:`kaito.provisioners.options`) and is built as ``factory(manager, options)``:
``manager`` is the :class:`kaito.runtime.Manager` whose client and informer cache the backend
reads and writes through, ``options`` that dataclass, which :mod:`kaito.operator` picks out of
the process's OperatorOptions.
"""

from kaito.provisioners.byo import BYOProvisioner
from kaito.provisioners.registry import BACKENDS, BackendSpec

__all__ = ["BACKENDS", "BYOProvisioner", "BackendSpec"]
