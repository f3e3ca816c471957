"""CloudProvider ``aks``: one AKS agent pool (count 1) per NodeClaim, through the Azure SDK.

Modules: :mod:`.options` (the flags), :mod:`.pools` (a claim's pool: name, tags, body),
:mod:`.errors` (ARM's refusals as CloudErrors), :mod:`.credential` (what signs ARM requests) and
:mod:`.provider` (the CloudProvider). The Azure SDK is imported only when a provider is made.
"""

from kaito.provisioners.cloud.aks.errors import RETRYABLE_CODES, error_of
from kaito.provisioners.cloud.aks.options import AksOptions
from kaito.provisioners.cloud.aks.pools import LABEL_AGENTPOOL, TAG_CREATED, TAG_NODECLAIM, pool_name
from kaito.provisioners.cloud.aks.provider import AksCloudProvider, new_cloud

__all__ = [
    "LABEL_AGENTPOOL",
    "RETRYABLE_CODES",
    "TAG_CREATED",
    "TAG_NODECLAIM",
    "AksCloudProvider",
    "AksOptions",
    "error_of",
    "new_cloud",
    "pool_name",
]
