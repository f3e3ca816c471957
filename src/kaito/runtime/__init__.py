"""kaito.runtime — controller-runtime semantics for asyncio operators, on plain dicts.

Why a library of its own: kaito's controllers need Go controller-runtime's guarantees (a shared
informer cache, a work queue that never reconciles one key twice at once, rate-limited retries,
leader election, probes and metrics under the usual names) at a cost Python frameworks built on
per-event handlers do not reach. Objects are plain dicts and reads come from the cache, so a
converged reconcile makes no API request at all.

The layers, bottom up::

    errors, resources   typed API errors; GVK and REST discovery
    client              get/list from the cache, writes (merge/JSON/SSA patches) to the API
    cache, informer     Store + LIST/WATCH reflector, one shared informer per kind
    workqueue           dirty/processing queue, per-item backoff, token bucket
    leaderelection      coordination.k8s.io Lease elector
    controller          sources → predicates → queue → reconcile workers
    manager             lifecycle: probes, metrics, cache sync, leadership, graceful shutdown
    helpers             conditions, finalizers, ownerrefs, events, logging

Typical use::

    mgr = Manager(config, leader_election=LeaderElectionOptions(name="my-operator"))
    mgr.builder().for_(MY_KIND, predicates=[generation_changed()]).owns(CONFIGMAP).complete(MyReconciler(mgr))
    await mgr.start()

kaito.runtime never imports the rest of kaito; see docs/library.md.
"""

from kaito.runtime.cache import Store, key_of
from kaito.runtime.client import Client
from kaito.runtime.conditions import (
    get_condition,
    is_true,
    remove_condition,
    set_condition,
    set_observed_generation,
)
from kaito.runtime.controller import (
    Controller,
    ControllerBuilder,
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
)
from kaito.runtime.events import NORMAL, WARNING, EventRecorder
from kaito.runtime.finalizers import add_finalizer, has_finalizer, is_being_deleted, remove_finalizer
from kaito.runtime.informer import Informer, InformerCache
from kaito.runtime.leaderelection import LeaderElector
from kaito.runtime.logging import configure_logging, get_logger
from kaito.runtime.manager import LeaderElectionOptions, Manager
from kaito.runtime.metrics import Metrics
from kaito.runtime.ownerrefs import (
    AlreadyOwnedError,
    get_controller_of,
    is_controlled_by,
    set_controller_reference,
)
from kaito.runtime.predicates import (
    Predicate,
    and_,
    annotations_changed,
    generation_changed,
    label_selector,
    labels_changed,
    not_,
    or_,
)
from kaito.runtime.resources import GVK, RESTMapper
from kaito.runtime.workqueue import WorkQueue, default_controller_rate_limiter

__all__ = [
    "GVK",
    "NORMAL",
    "WARNING",
    "AlreadyExistsError",
    "AlreadyOwnedError",
    "ApiError",
    "Client",
    "ConflictError",
    "Controller",
    "ControllerBuilder",
    "EventRecorder",
    "ForbiddenError",
    "GoneError",
    "Informer",
    "InformerCache",
    "InvalidError",
    "LeaderElectionOptions",
    "LeaderElector",
    "Manager",
    "Metrics",
    "NotFoundError",
    "Predicate",
    "RESTMapper",
    "Reconciler",
    "Request",
    "Result",
    "Store",
    "TerminalError",
    "WorkQueue",
    "add_finalizer",
    "and_",
    "annotations_changed",
    "configure_logging",
    "default_controller_rate_limiter",
    "generation_changed",
    "get_condition",
    "get_controller_of",
    "get_logger",
    "has_finalizer",
    "is_being_deleted",
    "is_controlled_by",
    "is_true",
    "key_of",
    "label_selector",
    "labels_changed",
    "not_",
    "or_",
    "remove_condition",
    "remove_finalizer",
    "set_condition",
    "set_controller_reference",
    "set_observed_generation",
]
