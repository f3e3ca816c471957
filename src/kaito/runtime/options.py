"""Options of the manager, its controllers and its informers, as plain dataclasses.

One field per setting, each with a docstring saying why you would change it: command-line
flags map onto fields one to one (``--graceful-shutdown-timeout`` → ``graceful_shutdown_timeout``)
and :func:`field_docs` hands those docstrings to a CLI's help text, so the documentation lives
next to the default it explains. Keyword arguments of ``Manager``, ``Controller`` and
``Informer`` remain and override the options object's fields.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Self

from kaito.runtime.resources import GVK
from kaito.runtime.workqueue import RateLimiter


class _Replaceable:
    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied; unknown names fail with the valid ones listed."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no option {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass
class LeaderElectionOptions(_Replaceable):
    """A coordination.k8s.io Lease elects one active replica; defaults are client-go's."""

    name: str
    """Lease name; every replica of one operator must use the same one."""
    namespace: str = "default"
    """Namespace of the Lease (usually the operator's own)."""
    identity: str | None = None
    """This replica's holder identity; None: hostname (the pod name) plus a random suffix, so a
    restarted pod is a new holder."""
    lease_duration: float = 15.0
    """How long followers wait, after the record last changed, before taking the lease over."""
    renew_deadline: float = 10.0
    """The leader steps down if it has not renewed within this long of its last renewal; must
    be shorter than ``lease_duration`` so it stops before anyone may take over."""
    retry_period: float = 2.0
    """Interval between renewals (leader) and acquisition attempts (followers)."""
    release_on_cancel: bool = True
    """Clear holderIdentity on clean shutdown so a successor starts at once instead of after a
    whole lease."""


@dataclass
class InformerOptions(_Replaceable):
    """How each informer lists and watches; shared by every informer of a manager's cache."""

    resync: float | None = None
    """Seconds between periodic resyncs (every cached object re-delivered as an update, so
    controllers reconcile it again); None: never. A safety net for reconcilers that depend on
    the outside world, not a substitute for watching what they depend on."""
    strip_managed_fields: bool = True
    """Drop ``metadata.managedFields`` on the way into the store (often half an object, never
    read by reconcilers)."""
    share_strings: bool = True
    """Intern every key and short string value of an object that arrives by a watch event on its
    way into the store: JSON decoding gives each such object its own copies of the same keys and
    values, about 45 % of a cached Pod or StatefulSet; sharing them costs about twice the
    parse's CPU per object. The objects of a sync (LIST pages, a watch-list's initial state)
    already share keys within each page and are left as parsed (namespace and label values are
    interned either way)."""
    min_watch_timeout: float = 300.0
    """Lower bound of the server-side watch timeout, drawn at random per watch so informers do
    not reconnect in lockstep."""
    max_watch_timeout: float = 600.0
    """Upper bound of the server-side watch timeout."""
    inactivity_timeout: float = 180.0
    """A watch or LIST that delivers nothing for this long is dropped (half-open TCP
    connections); bookmarks keep a quiet watch alive."""
    backoff_initial: float = 0.8
    """First delay after a failed list/watch (and after repeated 410 Gone); doubles per failure."""
    backoff_max: float = 30.0
    """Largest delay between list/watch attempts."""
    backoff_reset_after: float = 120.0
    """A failure this long after the previous one starts again from ``backoff_initial``."""
    watch_list: bool = False
    """Opt-in: sync (and relist) by streaming watch-list instead of paged LISTs: one watch with
    ``sendInitialEvents=true`` that delivers the current state as ADDED events, ends it with a
    bookmark annotated ``k8s.io/initial-events-end`` and then goes on as the ordinary watch
    (client-go's ``WatchListClient``, on by default there since 1.35). The apiserver serves it
    from its watch cache without reading etcd; measured on 100,000 ConfigMaps, apiserver and
    etcd together spent about half the CPU they spend on paged LISTs (docs/performance.md). A
    server that refuses it (400 or 422, as apiservers before 1.27 do) gets paged LISTs from then
    on. Off by default: the operator's own suites (apiserver restarts under a fault proxy, request
    counts per LIST) have not yet passed with it on."""
    list_page_size: int = 500
    """Objects per LIST page (client-go's default), first LIST and relists alike: each page is
    parsed on its own, so the event loop runs between pages of a big LIST. A LIST has no
    overall deadline (a big cache must be able to sync), only ``inactivity_timeout`` between
    bytes."""


@dataclass
class ControllerOptions(_Replaceable):
    """Per-controller settings (``builder.with_options(...)``)."""

    max_concurrent_reconciles: int = 1
    """Workers, i.e. distinct keys reconciled at once (one key is never reconciled twice at once)."""
    reconcile_timeout: float | None = None
    """Cancel a reconcile after this many seconds and retry it as an error; None: no limit."""
    rate_limiter: Callable[[], RateLimiter] | None = None
    """Factory of the retry rate limiter; None: controller-runtime's default (per key 5 ms →
    1000 s, overall 10 qps with a burst of 100)."""
    cache_sync_timeout: float = 120.0
    """How long to wait for the controller's informers to sync before failing."""
    recover_panic: bool = True
    """Treat an unexpected BaseException from a reconcile (a stray CancelledError, say) like an
    error: count it in ``controller_runtime_reconcile_panics_total`` and retry. False lets it
    stop the controller, and so the manager."""


@dataclass
class ManagerOptions(_Replaceable):
    """Everything a Manager is configured by, one field per ``kaito controller`` flag."""

    leader_election: LeaderElectionOptions | None = None
    """None: this process always leads (a single replica, or tests)."""
    metrics_bind_address: str | None = "0"
    """``":8080"``, ``"127.0.0.1:0"`` (any free port, read ``mgr.metrics_port``); ``"0"``, ``""``
    or None: no metrics server."""
    health_probe_bind_address: str | None = "0"
    """Address of ``/healthz`` and ``/readyz``, same format; the same fixed address as metrics
    serves both from one server."""
    cache_sync_timeout: float = 120.0
    """Fail start-up if informer caches have not synced by then (a reconciler must never read
    a half-filled cache)."""
    graceful_shutdown_timeout: float = 30.0
    """The whole shutdown budget: draining reconciles, releasing the lease and stopping the
    rest all fit in it. Keep it below the pod's terminationGracePeriodSeconds."""
    namespace: str | None = None
    """Restrict every informer (and so the cache) to one namespace; None: cluster-wide.
    Cluster-scoped kinds (Nodes) are still watched cluster-wide."""
    label_selectors: Mapping[GVK, str] = field(default_factory=dict)
    """Per kind, a label selector its informer lists and watches with (``{POD:
    "kaito.sh/workspace"}``), as controller-runtime's ``cache.Options.ByObject``: objects
    without the labels are never transferred, parsed or cached, which matters for kinds a
    cluster has many of (Pods). Cache reads of such a kind (``client.get``/``list``) see only
    matching objects, so set one only for kinds the operator reads by those labels alone."""
    handle_signals: bool = True
    """Install SIGTERM/SIGINT handlers while ``start()`` runs; embedders with their own
    handling pass False and call ``stop()``."""
    user_agent: str = "kaito-runtime"
    """User-Agent component of API requests (shown in audit logs)."""
    freeze_gc_after_sync: bool = True
    """``gc.collect()`` then ``gc.freeze()`` once caches sync: the start-up heap and initial cache
    leave the cyclic collector's view, shortening later collections. Process-wide: pass False
    when embedding in a process that relies on collecting cyclic garbage created before then."""
    sync_period: float | None = None
    """Periodic resync of every informer (see ``InformerOptions.resync``); None: never."""
    informer: InformerOptions = field(default_factory=InformerOptions)
    """Settings of every informer of the manager's cache."""


@dataclass
class WriterOptions(_Replaceable):
    """How a ``Writer`` (:mod:`kaito.runtime.writes`) writes one controller's objects."""

    field_manager: str
    """fieldManager of every apply and merge patch: the name managedFields and the audit log
    show, and what server-side apply resolves conflicts by. One per controller."""
    hash_annotation: str = "kaito.sh/desired-hash"
    """Annotation carrying the desired manifest's hash on every object written. An object whose
    annotation matches the desired manifest's hash (and shows no edit) is not written again;
    changing the name makes every object look changed once."""
    max_background_writes: int = 16
    """Background writes (``Writer.apply_in_background``) sent at once; more wait for a slot.
    Usually the controller's ``max_concurrent_reconciles``."""
    not_owned_hint: str = "rename the owner or delete that object"
    """What to do, appended to a ``NotOwnedError``'s message (an object of the needed name is
    controlled by someone else); a controller's users read it in a status condition."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), for CLI help and generated docs."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


__all__ = [
    "ControllerOptions",
    "InformerOptions",
    "LeaderElectionOptions",
    "ManagerOptions",
    "WriterOptions",
    "field_docs",
]
