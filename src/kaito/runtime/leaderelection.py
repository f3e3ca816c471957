"""Leader election on coordination.k8s.io/v1 Leases, with client-go's semantics.

Why it is built the way it is:
- Clocks of different machines disagree, so nobody compares the lease's renewTime to their own
  wall clock. Each candidate instead remembers when *it* last saw the record change (by its
  own monotonic clock); the lease is expired when the record has not changed for the record's
  own ``leaseDurationSeconds`` since then (the holder's setting, not ours). renewTime is
  written for humans only.
- A leader that cannot renew within renew_deadline *of its last successful renewal* stops
  leading before anyone else may take over (renew_deadline + retry_period < lease_duration),
  so two leaders never act at once. The deadline is measured from the last renewal, not from
  the next attempt: after a stalled event loop the leader is already out of time and steps
  down without another request. ``is_leader`` applies the same deadline, so code that checks
  it never acts on a lease that may have passed to someone else.
- A renewal counts from when its request was *sent*, not from when its answer was read: the
  apiserver may commit it at once and the answer arrive much later (a slow network, a stalled
  loop). Others judge the lease from the moment they see the committed record, which is after
  the send; stamping the read time instead would stretch our own deadline past the point where
  a follower takes over (client-go's renewTime is likewise taken before the request).
- Seeing another holder in the record ends leadership at once: someone else took the lease.
- On a clean shutdown (``stop()``) the leader first stops renewing, then clears holderIdentity
  so a successor takes over at its next retry instead of waiting out the full lease. A write
  that raced the release (a renewal whose answer was lost, a label added by a tool) makes the
  release PUT conflict; the elector re-reads and retries while the lease is still its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from kaito.runtime.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from kaito.runtime.resources import LEASE

if TYPE_CHECKING:
    from kaito.runtime.client import Client

log = structlog.get_logger("kaito.runtime.leaderelection")

Callback = Callable[[], Awaitable[None] | None]

JITTER_FACTOR = 1.2

# Failures that mean "try again next round", never "crash the elector".
_TRANSIENT = (ApiError, OSError, aiohttp.ClientError)


def _micro_time(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    """The fields whose change proves the holder is alive (client-go compares the whole record)."""
    return (
        spec.get("holderIdentity") or "",
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions"),
    )


class LeaderElector:
    def __init__(
        self,
        client: Client,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        release_on_cancel: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        if lease_duration <= renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError("renew_deadline must be greater than retry_period * 1.2")
        if not identity:
            raise ValueError("identity must not be empty")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self._clock = clock
        self._is_leader = False
        self._last_renew = -math.inf
        self._observed: tuple[Any, ...] | None = None
        self._observed_time = 0.0
        self._observed_obj: dict[str, Any] | None = None
        self._reported_leader: str | None = None
        self._lead_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)

    @property
    def is_leader(self) -> bool:
        """Leading, and renewed within ``renew_deadline``: past that, another candidate may
        already hold the lease, whatever the renew loop has noticed so far."""
        return self._is_leader and self._clock() - self._last_renew < self.renew_deadline

    @property
    def leader(self) -> str | None:
        """The holder we last observed (may be stale by up to one retry period)."""
        return self._reported_leader

    def stop(self) -> None:
        """Step down cleanly: finish the renewal in flight, stop renewing, release, return.

        Preferred over cancelling ``run()``: a renewal cut off mid-request may still be applied
        by the server, which is exactly the race that makes a release conflict.
        """
        self._stop.set()

    # ----- main loop

    async def run(self) -> None:
        """Campaign until elected, lead while renewals succeed; returns when leadership is lost
        or after ``stop()``. Stopping or cancelling releases the lease when ``release_on_cancel``
        is set."""
        try:
            if not await self._acquire():
                return
            self._is_leader = True
            self._log.info("became leader")
            self._lead_task = self._start_callback(self.on_started_leading)
            await self._renew_loop()
            if not self._stop.is_set():
                self._log.info("leadership lost")
        finally:
            was_leader = self._is_leader
            self._is_leader = False
            if self._lead_task is not None and not self._lead_task.done():
                self._lead_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._lead_task
            if was_leader:
                task = asyncio.current_task()
                cancelled = task is not None and task.cancelling() > 0
                if self.release_on_cancel and (cancelled or self._stop.is_set()):
                    await asyncio.shield(self._release_quietly())
                await self._call(self.on_stopped_leading)

    async def run_forever(self) -> None:
        """Re-campaign after each loss (for processes that can stand down and rejoin), until
        ``stop()`` or until this task is cancelled: a cancellation that some await lost on the
        way (Python 3.11's ``wait_for`` can drop one that meets its own result) still ends it."""
        task = asyncio.current_task()
        while not self._stop.is_set():
            await self.run()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    def _start_callback(self, cb: Callback | None) -> asyncio.Task[None] | None:
        if cb is None:
            return None
        result = cb()
        if inspect.isawaitable(result):
            async def _wrap(aw: Awaitable[None]) -> None:
                await aw

            return asyncio.create_task(_wrap(result), name=f"leading-{self.name}")
        return None

    async def _call(self, cb: Callback | None) -> None:
        if cb is None:
            return
        try:
            result = cb()
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("leader election callback failed")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless ``stop()`` comes first; returns whether we were stopped."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as its timeout fires, and the campaign would go on after being cancelled.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._stop.wait()
        return self._stop.is_set()

    async def _acquire(self) -> bool:
        while not self._stop.is_set():
            if await self._try_with_timeout(self.renew_deadline):
                return True
            if await self._sleep(self.retry_period * (1.0 + random.random() * JITTER_FACTOR)):
                break
        return False

    def _held_by_other(self) -> bool:
        holder = ((self._observed_obj or {}).get("spec") or {}).get("holderIdentity") or ""
        return bool(holder) and holder != self.identity

    async def _renew_loop(self) -> None:
        """Renew every retry period; return (leadership lost) once ``renew_deadline`` has passed
        since the last successful renewal, or at once when another holder shows up."""
        while True:
            if await self._sleep(self.retry_period):
                return
            while True:
                remaining = self._last_renew + self.renew_deadline - self._clock()
                if remaining <= 0:
                    self._log.warning("renew deadline passed since the last renewal; stepping down")
                    return
                if await self._try_with_timeout(remaining):
                    break
                if self._held_by_other():
                    self._log.warning("lease taken by another holder; stepping down", holder=self.leader)
                    return
                remaining = self._last_renew + self.renew_deadline - self._clock()
                if remaining <= 0:
                    self._log.warning("renew deadline passed since the last renewal; stepping down")
                    return
                if await self._sleep(min(self.retry_period, remaining)):
                    return

    async def _try_with_timeout(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):  # not wait_for: see _sleep
                return await self.try_acquire_or_renew()
        except TimeoutError:
            self._log.info("lease request timed out")
            return False

    # ----- one round

    async def try_acquire_or_renew(self) -> bool:
        now_wall = _micro_time()
        duration_s = max(1, math.ceil(self.lease_duration))
        try:
            lease = await self.client.get(LEASE, self.name, self.namespace, cached=False)
        except NotFoundError:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration_s,
                    "acquireTime": now_wall,
                    "renewTime": now_wall,
                    "leaseTransitions": 0,
                },
            }
            sent = self._clock()
            try:
                created = await self.client.create(lease)
            except (AlreadyExistsError, ConflictError):
                return False
            except _TRANSIENT as exc:
                self._log.info("creating lease failed", error=str(exc))
                return False
            self._observe(created)
            self._last_renew = sent
            return True
        except _TRANSIENT as exc:
            self._log.info("reading lease failed", error=str(exc))
            return False

        spec: dict[str, Any] = lease.get("spec") or {}
        record = _record(spec)
        if record != self._observed:
            self._observe(lease)
        holder = spec.get("holderIdentity") or ""
        # The holder's own duration decides when its lease expires, not ours.
        held_for = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_time + held_for > self._clock():
            return False  # someone else holds a lease that is still alive by our clock

        new_spec = dict(spec)
        if holder == self.identity:
            new_spec["acquireTime"] = spec.get("acquireTime") or now_wall
            new_spec["leaseTransitions"] = spec.get("leaseTransitions") or 0
        else:
            new_spec["acquireTime"] = now_wall
            new_spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
        new_spec["holderIdentity"] = self.identity
        new_spec["leaseDurationSeconds"] = duration_s
        new_spec["renewTime"] = now_wall
        lease["spec"] = new_spec
        # Our deadline counts from here: the server may commit the renewal at once and its answer
        # reach us much later; a follower's view of the lease starts from the commit.
        sent = self._clock()
        try:
            updated = await self.client.update(lease)  # carries resourceVersion: stale → Conflict
        except ConflictError:
            return False
        except _TRANSIENT as exc:
            self._log.info("updating lease failed", error=str(exc))
            return False
        self._observe(updated)
        self._last_renew = sent
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        self._observed = _record(spec)
        self._observed_time = self._clock()
        self._observed_obj = lease
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            if self.on_new_leader is not None:
                try:
                    self.on_new_leader(holder)
                except Exception:
                    self._log.exception("on_new_leader failed")

    async def _release_quietly(self) -> None:
        try:
            await asyncio.wait_for(self.release(), self.renew_deadline)
        except Exception as exc:
            self._log.info("releasing lease failed", error=str(exc))

    async def release(self, attempts: int = 5) -> bool:
        """Clear holderIdentity (if we still hold it) so a successor need not wait out the lease.

        A conflict means the lease changed since we last saw it (a renewal whose answer we never
        read, an annotation from a tool): re-read it and retry while it is still ours.
        """
        lease = self._observed_obj
        for _ in range(attempts):
            if lease is None:
                return False
            spec = dict(lease.get("spec") or {})
            if (spec.get("holderIdentity") or "") != self.identity:
                return False
            now_wall = _micro_time()
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now_wall, acquireTime=now_wall)
            try:
                updated = await self.client.update({**lease, "spec": spec})
            except ConflictError:
                try:
                    lease = await self.client.get(LEASE, self.name, self.namespace, cached=False)
                except NotFoundError:
                    return False
                continue
            except _TRANSIENT as exc:
                self._log.info("release failed", error=str(exc))
                return False
            self._observe(updated)
            self._log.info("released lease")
            return True
        self._log.info("release failed: the lease kept changing")
        return False
