"""CloudProvider backends for kaito's node-provisioner: ``kwok`` (local) and ``aks`` (Azure).

Each cloud lives in its own package and never imports another (an import-linter contract); what
they share with the NodeClaim controller (reading a NodeClaim's wants, the node an instance type
becomes) lives in :mod:`kaito.nodes`. The clouds are listed in :mod:`.registry`.
"""

from kaito.provisioners.cloud.registry import (
    CLOUDS,
    CloudFactory,
    CloudOptions,
    CloudSpec,
    changed_fields,
    cloud_spec,
    default_cloud_options,
    with_defaults,
)

__all__ = [
    "CLOUDS",
    "CloudFactory",
    "CloudOptions",
    "CloudSpec",
    "changed_fields",
    "cloud_spec",
    "default_cloud_options",
    "with_defaults",
]
