"""kaito.runtime — controller-runtime semantics for asyncio operators, on plain dicts.

Why a library of its own: kaito's controllers need Go controller-runtime's guarantees (a shared
informer cache, a work queue that never reconciles one key twice at once, rate-limited retries,
leader election, probes and metrics under the usual names) at a cost Python frameworks built on
per-event handlers do not reach. Objects are plain dicts and reads come from the cache, so a
converged reconcile makes no API request at all.

**The names exported here are the public surface** (listed in ``__all__`` and in
docs/library.md); import them from ``kaito.runtime``. Modules under ``kaito.runtime._internal``
and names starting with an underscore are machinery with no compatibility promise, as Go's
``pkg/internal``. The layers, bottom up (an import-linter contract in pyproject.toml keeps
imports pointing down)::

    errors, resources, logging   typed API errors; GVK and REST discovery; structlog set-up
    store, workqueue, metrics    the object store; the dirty/processing queue; Prometheus names
    options                      ManagerOptions, ControllerOptions, InformerOptions, LeaderElectionOptions
    client                       get/list from the cache, writes (merge/JSON/SSA patches) to the API
    informer, cache              LIST/WATCH reflector; one shared informer per kind
    leaderelection, controller   Lease elector; sources → predicates → queue → reconcile workers
    builder                      mgr.builder().for_().owns().watches().complete()
    manager                      lifecycle: probes, metrics, cache sync, leadership, graceful shutdown
    writes                       write-if-changed: desired-state fingerprint, own writes newer than the cache
    helpers                      conditions, finalizers, ownerrefs, events, predicates

Typical use::

    mgr = Manager(config, ManagerOptions(leader_election=LeaderElectionOptions(name="my-operator")))
    mgr.builder().for_(MY_KIND, predicates=[generation_changed()]).owns(CONFIGMAP).complete(MyReconciler(mgr))
    await mgr.start()

kaito.runtime never imports the rest of kaito; see docs/library.md.
"""

from kaito.runtime._internal.kubeconfig import ExecConfig, KubeconfigError, RestConfig
from kaito.runtime.builder import ControllerBuilder
from kaito.runtime.cache import InformerCache
from kaito.runtime.certwatcher import CertificateError, CertWatcher
from kaito.runtime.client import Client, load_configuration, retry_on_conflict
from kaito.runtime.conditions import (
    get_condition,
    is_true,
    remove_condition,
    set_condition,
    set_observed_generation,
)
from kaito.runtime.controller import (
    Controller,
    ControllerError,
    Reconciler,
    Request,
    Result,
    TerminalError,
)
from kaito.runtime.errors import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)
from kaito.runtime.events import NORMAL, WARNING, EventRecorder
from kaito.runtime.finalizers import (
    add_finalizer,
    finalizers_patch,
    has_finalizer,
    is_being_deleted,
    remove_finalizer,
)
from kaito.runtime.informer import EventHandler, FuncHandler, Informer
from kaito.runtime.leaderelection import LeaderElector
from kaito.runtime.logging import configure_logging, get_logger
from kaito.runtime.manager import Manager, ManagerError, Runnable
from kaito.runtime.metrics import Metrics
from kaito.runtime.options import (
    ControllerOptions,
    InformerOptions,
    LeaderElectionOptions,
    ManagerOptions,
    WriterOptions,
    field_docs,
)
from kaito.runtime.ownerrefs import (
    AlreadyOwnedError,
    get_controller_of,
    is_controlled_by,
    remove_owner_reference,
    set_controller_reference,
    set_owner_reference,
)
from kaito.runtime.predicates import (
    Predicate,
    and_,
    annotations_changed,
    generation_changed,
    label_selector,
    labels_changed,
    namespace_in,
    not_,
    or_,
    resource_version_changed,
)
from kaito.runtime.resources import (
    CONFIGMAP,
    CONTROLLERREVISION,
    CRD,
    DEPLOYMENT,
    EVENT,
    GVK,
    JOB,
    LEASE,
    NAMESPACE,
    NODE,
    POD,
    SECRET,
    SERVICE,
    STATEFULSET,
    ResourceInfo,
    RESTMapper,
)
from kaito.runtime.store import Store, key_of
from kaito.runtime.tls import set_tls_read_buffer
from kaito.runtime.webhook import (
    AdmissionHandler,
    WebhookServer,
    WebhookServerOptions,
    allowed,
    denied,
    errored,
    json_patch,
    patch_response,
    patched,
)
from kaito.runtime.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    ShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)
from kaito.runtime.writes import (
    Accepted,
    Expectations,
    NotOwnedError,
    RecentWrites,
    Slots,
    Writer,
    check_owner,
    drift,
    manifest_hash,
    revert_patch,
    stamp,
    up_to_date,
)

__all__ = [
    "CONFIGMAP",
    "CONTROLLERREVISION",
    "CRD",
    "DEPLOYMENT",
    "EVENT",
    "GVK",
    "JOB",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "NORMAL",
    "POD",
    "SECRET",
    "SERVICE",
    "STATEFULSET",
    "WARNING",
    "Accepted",
    "AdmissionHandler",
    "AlreadyExistsError",
    "AlreadyOwnedError",
    "ApiError",
    "BucketRateLimiter",
    "CertWatcher",
    "CertificateError",
    "Client",
    "ConflictError",
    "Controller",
    "ControllerBuilder",
    "ControllerError",
    "ControllerOptions",
    "EventHandler",
    "EventRecorder",
    "ExecConfig",
    "Expectations",
    "ForbiddenError",
    "FuncHandler",
    "GoneError",
    "Informer",
    "InformerCache",
    "InformerOptions",
    "InvalidError",
    "ItemExponentialFailureRateLimiter",
    "KubeconfigError",
    "LeaderElectionOptions",
    "LeaderElector",
    "Manager",
    "ManagerError",
    "ManagerOptions",
    "MaxOfRateLimiter",
    "Metrics",
    "NotFoundError",
    "NotOwnedError",
    "Predicate",
    "RESTMapper",
    "RateLimiter",
    "RecentWrites",
    "Reconciler",
    "Request",
    "ResourceInfo",
    "RestConfig",
    "Result",
    "Runnable",
    "ShutDown",
    "Slots",
    "Store",
    "TerminalError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "WebhookServer",
    "WebhookServerOptions",
    "WorkQueue",
    "Writer",
    "WriterOptions",
    "add_finalizer",
    "allowed",
    "and_",
    "annotations_changed",
    "check_owner",
    "configure_logging",
    "default_controller_rate_limiter",
    "denied",
    "drift",
    "errored",
    "field_docs",
    "finalizers_patch",
    "generation_changed",
    "get_condition",
    "get_controller_of",
    "get_logger",
    "has_finalizer",
    "is_being_deleted",
    "is_controlled_by",
    "is_true",
    "json_patch",
    "key_of",
    "label_selector",
    "labels_changed",
    "load_configuration",
    "manifest_hash",
    "namespace_in",
    "not_",
    "or_",
    "patch_response",
    "patched",
    "remove_condition",
    "remove_finalizer",
    "remove_owner_reference",
    "resource_version_changed",
    "retry_on_conflict",
    "revert_patch",
    "set_condition",
    "set_controller_reference",
    "set_observed_generation",
    "set_owner_reference",
    "set_tls_read_buffer",
    "stamp",
    "up_to_date",
]
