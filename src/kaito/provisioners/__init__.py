"""NodeProvisioner backends, chosen by name (``--node-provisioner``) in :mod:`kaito.operator`.

Every backend is constructed as ``Backend(manager, options)``: ``manager`` is the
:class:`kaito.runtime.Manager` whose client and informer cache the backend reads and writes
through, ``options`` the backend's own typed settings (:mod:`kaito.provisioners.options`), which
:mod:`kaito.operator` picks out of the process's OperatorOptions.
"""

from kaito.provisioners.byo import BYOProvisioner

__all__ = ["BYOProvisioner"]
