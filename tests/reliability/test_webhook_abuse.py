"""Hostile traffic against kaito's admission webhook server (issue 21, item 3).

The webhook shares the operator's process (512Mi limit) and event loop with the reconcilers and
leader election, and any pod can open a connection to it. The real server (kaito's handlers,
TLS, the runtime's WebhookServer) runs in a process of its own (``webhook_abuse_server.py``) with
a loop-lag probe on its loop; the attackers are real TLS clients on loopback: slow request heads
(slowloris), slow bodies, huge and deeply nested bodies, and a thousand connections at once.
Each check asserts the server's peak RSS growth (the kernel's high-water mark, reset before the
attack), its loop's longest stall (CPU time its thread spent between two probe ticks, which load
from other processes does not inflate), that a legitimate AdmissionReview on a fresh connection is
answered throughout, and what the attackers were answered: 400/408/413 or a closed connection.

The server runs with 2 s header and body deadlines and a 5 s keep-alive so the suite takes
seconds; every other limit is the default.

The NetworkPolicy, as shipped in the chart and in config/, admits only the apiserver's sources
to the webhook port. Two checks run the validating handler's ConfigMap lookups against the real
apiserver: their answer must not tell a present ConfigMap the operator may not read (or one in a
namespace only the request's object names) from an absent one, and a stalled apiserver (a
loopback proxy that holds the lists back) must not keep the answer past its 10 s call timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from rel_support import REPO, fresh_namespace
from reliability_stack import emit

from faultproxy import Chunks, Seen, proxied  # isort: skip  (found through rel_support's path)
from kaito.api.webhook import LOOKUP_TIMEOUT, lookup_config_maps, validate_request_with_api
from kaito.envtest import Cluster
from kaito.runtime import Client, load_configuration

pytestmark = pytest.mark.timeout(300)

HERE = Path(__file__).resolve().parent
HEADER_TIMEOUT = 2.0  # as webhook_abuse_server.OPTIONS
BODY_TIMEOUT = 2.0
#: A closed connection is noticed this long after its deadline at the latest (loaded machine).
SLACK = 1.5
VALIDATE = "/validate-kaito-sh-v1beta1-workspace"
#: The suite's one figures line, filled by each check and emitted when the module ends.
FIGURES: dict[str, Any] = {"suite": "webhook-abuse"}


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if len(FIGURES) > 1:
        emit(FIGURES)


# --------------------------------------------------------------------------- the server


class Served:
    """The webhook server's process: its port, its CA, and its measurements on request."""

    def __init__(self, proc: subprocess.Popen[str], port: int, ca: str) -> None:
        self.proc, self.port, self.ca = proc, port, ca

    def _ask(self, cmd: str) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(cmd + "\n")
        stdin.flush()
        answer: dict[str, Any] = json.loads(stdout.readline())
        return answer

    def reset(self) -> dict[str, Any]:
        self._ask("reset")
        time.sleep(0.3)  # let the probe tick past the reset
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # The attackers hold over a thousand sockets at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    folder = tmp_path_factory.mktemp("webhook-abuse")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "webhook_abuse_server.py"), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        stdout: IO[str] | None = proc.stdout
        assert stdout is not None
        hello = json.loads(stdout.readline())
        server = Served(proc, int(hello["port"]), hello["ca"])
        # One call first: the first validation loads the preset tables, a one-off cost that is
        # not the attack's.
        with LegitCalls(server.port, server.ca) as warm:
            while not warm.latencies and not warm.failures:
                time.sleep(0.05)
        warm.check()
        yield server
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- clients


def review_body(uid: str) -> bytes:
    ws = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "legit", "namespace": "default"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "namespace": "default", "object": ws},
    }
    return json.dumps(review).encode()


@dataclass
class LegitCalls:
    """The apiserver's part: an AdmissionReview every 0.2 s on a fresh TLS connection (the hardest
    case: it must win a connection slot during the attack), each to be answered 200 with its uid
    within 5 s (the apiserver gives a call 10 s)."""

    port: int
    ca: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LegitCalls:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca)
        while not self._stop.is_set():
            uid = str(uuid.uuid4())
            t0 = time.monotonic()
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=5)
            try:
                conn.request("POST", VALIDATE, review_body(uid), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
                if resp.status != 200 or body["response"]["uid"] != uid:
                    self.failures.append(f"HTTP {resp.status}: {body}")
                else:
                    self.latencies.append(time.monotonic() - t0)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc} after {time.monotonic() - t0:.1f}s")
            finally:
                conn.close()
            self._stop.wait(0.2)

    def check(self) -> None:
        assert not self.failures, f"legitimate AdmissionReviews failed during the attack: {self.failures[:5]}"
        assert self.latencies, "no legitimate AdmissionReview was answered during the attack"


def tls_connect(port: int, timeout: float = 10.0) -> ssl.SSLSocket | None:
    """A TLS connection to the server, or None when the server closed it during the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(sock)
    except (OSError, ssl.SSLError):
        sock.close()
        return None


def closed_or_answer(sock: ssl.SSLSocket) -> tuple[bool, bytes]:
    """(closed, bytes read) without blocking: what the server did to this connection so far."""
    sock.setblocking(False)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, data
            data += chunk
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False, data
    except (OSError, ssl.SSLError):
        return True, data
    finally:
        sock.setblocking(True)


def status_of(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1.1 "):
        return int(data[9:12])
    return None


@dataclass
class Trickler:
    """Connections that send a byte of their request every 0.25 s until the server ends them.

    A connection's hold is measured to the last time it was seen open (nothing to read, a byte
    sent), not to when its end was noticed: on a loaded machine a pass over hundreds of sockets
    can notice an end late, but never see a closed connection open."""

    socks: list[tuple[ssl.SSLSocket, float]]
    piece: bytes
    ended: dict[int, tuple[float, int | None]] = field(default_factory=dict)
    seen_open: dict[int, float] = field(default_factory=dict)

    def run(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while len(self.ended) < len(self.socks) and time.monotonic() < deadline:
            for i, (sock, _opened) in enumerate(self.socks):
                if i in self.ended:
                    continue
                closed, data = closed_or_answer(sock)
                if not closed and not data:
                    try:
                        sock.settimeout(1.0)
                        sock.send(self.piece)
                        self.seen_open[i] = time.monotonic()
                    except (OSError, ssl.SSLError):
                        closed = True
                if closed or data:
                    self.ended[i] = (time.monotonic(), status_of(data))
            time.sleep(0.25)
        for sock, _ in self.socks:
            sock.close()

    def held_longest(self) -> float:
        """The longest a connection was seen open past its opening (all must have ended)."""
        missing = len(self.socks) - len(self.ended)
        assert missing == 0, (
            f"{missing} of {len(self.socks)} slow connections were never closed by the server"
        )
        return max(self.seen_open.get(i, opened) - opened for i, (_s, opened) in enumerate(self.socks))


def post_raw(port: int, body: bytes, headers: dict[str, str], path: str = VALIDATE) -> int | None:
    """POST ``body`` as a client would that keeps writing; the status read, or None if closed."""
    sock = tls_connect(port)
    if sock is None:
        return None
    head = f"POST {path} HTTP/1.1\r\nHost: webhook\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    try:
        with sock:
            sock.settimeout(30)
            try:
                sock.sendall(head.encode() + b"\r\n")
                if headers.get("Transfer-Encoding") == "chunked":
                    step = 256 * 1024
                    for i in range(0, len(body), step):
                        part = body[i : i + step]
                        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                    sock.sendall(b"0\r\n\r\n")
                else:
                    sock.sendall(body)
            except (OSError, ssl.SSLError):
                pass  # the server may answer and close before the whole body is sent
            data = b""
            with contextlib.suppress(OSError, ssl.SSLError):
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return status_of(data)
    except (OSError, ssl.SSLError):
        return None


def attack(served: Served, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run`` with legitimate calls going on; the server's figures, before and after."""
    before = served.reset()
    t0 = time.monotonic()
    with LegitCalls(served.port, served.ca) as legit:
        outcome = run()
    after = served.stats()
    legit.check()
    figures = {
        "rss_before_mb": before["rss_mb"],
        "rss_after_mb": after["rss_mb"],
        "peak_rss_growth_mb": round(after["peak_rss_mb"] - before["rss_mb"], 1),
        "stall_cpu_s": after["stall_cpu_s"],
        "stall_wall_s": after["stall_wall_s"],
        "legit_answered": len(legit.latencies),
        "legit_slowest_s": round(max(legit.latencies), 3),
        "server_connections_after": after["connections"],
        "seconds": round(time.monotonic() - t0, 1),
        **outcome,
    }
    FIGURES[name] = figures
    print(f"{name}: {figures}")
    return figures


# --------------------------------------------------------------------------- the attacks


def test_slowloris_request_heads_are_cut_at_the_header_deadline(served: Served) -> None:
    """300 connections (more than the 128-connection cap) trickle a request head a byte at a time;
    each is closed by the header deadline or evicted for a newer one, never held."""

    def run() -> dict[str, Any]:
        opened = [s for s in (tls_connect(served.port) for _ in range(300)) if s is not None]
        socks = []
        # the header deadline runs from a head's first byte (an unused new connection is idle)
        for sock in opened:
            with contextlib.suppress(OSError, ssl.SSLError):
                sock.send(f"POST {VALIDATE} HTTP/1.1\r\nHost: webhook\r\n".encode())
            socks.append((sock, time.monotonic()))
        trickler = Trickler(socks, b"X")
        trickler.run(limit=HEADER_TIMEOUT + 20)
        statuses = sorted({str(st) for _t, st in trickler.ended.values()})
        return {
            "slow_connections": len(socks),
            "held_longest_s": round(trickler.held_longest(), 2),
            "answers": statuses,
        }

    f = attack(served, "slowloris", run)
    assert f["held_longest_s"] <= HEADER_TIMEOUT + SLACK
    assert f["peak_rss_growth_mb"] < 64
    assert f["stall_cpu_s"] < 0.1


def test_slow_bodies_get_408_at_the_body_deadline(served: Served) -> None:
    """60 requests send their head at once and then a body byte every 0.25 s (half of them
    announce a large body, which also waits for one of the large-body slots)."""

    def run() -> dict[str, Any]:
        socks: list[tuple[ssl.SSLSocket, float]] = []
        for i in range(60):
            sock = tls_connect(served.port)
            assert sock is not None
            length = 1000 if i % 2 else 1_000_000
            head = (
                f"POST {VALIDATE} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n["
            )
            sock.sendall(head.encode())
            socks.append((sock, time.monotonic()))
        trickler = Trickler(socks, b" ")
        trickler.run(limit=BODY_TIMEOUT + 20)
        statuses = sorted({str(s) for _t, s in trickler.ended.values()})
        return {
            "slow_bodies": len(socks),
            "held_longest_s": round(trickler.held_longest(), 2),
            "answers": statuses,
        }

    f = attack(served, "slow_bodies", run)
    assert f["held_longest_s"] <= BODY_TIMEOUT + SLACK
    assert set(f["answers"]) <= {"408", "None"}, f["answers"]
    assert "408" in f["answers"]


def test_huge_bodies_are_refused_before_they_are_parsed(served: Served) -> None:
    """Ten 7 MiB bodies of ``[{},{},...]`` at once (2.4 million objects each), ten 3.4 MiB ones
    (under the byte cap, over the object cap) and two 7 MiB chunked ones (no length up front)."""
    seven = b"[" + b",".join([b"{}"] * (7 * 1024 * 1024 // 3)) + b"]"
    under = b"[" + b",".join([b"{}"] * (3400 * 1024 // 3)) + b"]"
    plain = {"Content-Type": "application/json", "Content-Length": ""}

    def run() -> dict[str, Any]:
        results: list[tuple[str, int | None]] = []

        def one(kind: str, body: bytes) -> None:
            if kind == "chunked":
                headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            else:
                headers = {**plain, "Content-Length": str(len(body))}
            results.append((kind, post_raw(served.port, body, headers)))

        jobs = [("7MiB", seven)] * 10 + [("3.4MiB", under)] * 10 + [("chunked", seven)] * 2
        threads = [threading.Thread(target=one, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        by_kind: dict[str, list[str]] = {}
        for kind, status in results:
            by_kind.setdefault(kind, []).append(str(status))
        return {"answers": {k: sorted(set(v)) for k, v in by_kind.items()}}

    f = attack(served, "huge_bodies", run)
    answers = f["answers"]
    assert answers["3.4MiB"] == ["413"], answers
    assert set(answers["7MiB"]) <= {"413", "None"} and set(answers["chunked"]) <= {"413", "None"}, answers
    assert f["peak_rss_growth_mb"] < 64
    assert f["stall_cpu_s"] < 0.1


def test_largest_accepted_bodies_cost_a_bounded_parse(served: Served) -> None:
    """Bodies just inside the caps, shaped for the costliest parse: 245,000 ``1e308`` numbers
    (slowest to parse per value), 99,000 one-key objects (most memory per byte) and 3.4 MiB of
    8-byte strings, four of each at once. They are parsed (and answered 400: not an
    AdmissionReview) one per turn of the loop, at most two read at a time; those that wait past
    the body deadline for a large-body slot are answered 408."""
    numbers = b"[" + b",".join([b"1e308"] * 245_000) + b"]"
    objects = b'{"a":[' + b",".join(b'{"k%d":%d}' % (i, i) for i in range(99_000)) + b"]}"
    strings = b'["' + b"x" * (3400 * 1024) + b'"]'

    def run() -> dict[str, Any]:
        results: list[int | None] = []

        def one(body: bytes) -> None:
            headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
            results.append(post_raw(served.port, body, headers))

        threads = [threading.Thread(target=one, args=(b,)) for b in [numbers, objects, strings] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return {"answers": sorted({str(s) for s in results})}

    f = attack(served, "largest_accepted_bodies", run)
    assert "400" in f["answers"] and set(f["answers"]) <= {"400", "408"}, f["answers"]
    assert f["peak_rss_growth_mb"] < 96
    assert f["stall_cpu_s"] < 0.25


def test_json_nested_200000_deep_is_a_400(served: Served) -> None:
    """``[[[[...]]]]`` 200,000 deep, and 900 deep inside an AdmissionReview's object (parses,
    then the handler must not crash): a 400 and a refusal, never a 500 or a dropped connection."""
    deep = b"[" * 200_000 + b"]" * 200_000
    review = json.loads(review_body("deep"))
    review["request"]["object"]["spec"] = "@"
    nested = json.dumps(review).encode().replace(b'"@"', b"[" * 900 + b"]" * 900)

    def run() -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        deep_status = post_raw(served.port, deep, {**headers, "Content-Length": str(len(deep))})
        ctx = ssl.create_default_context(cafile=served.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=ctx, timeout=10)
        try:
            conn.request("POST", VALIDATE, nested, headers)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
        finally:
            conn.close()
        return {
            "deep_status": deep_status,
            "nested_900_status": resp.status,
            "nested_900_allowed": answer["response"]["allowed"],
        }

    f = attack(served, "deep_nesting", run)
    assert f["deep_status"] == 400
    assert f["nested_900_status"] in (200, 400) and f["nested_900_allowed"] is False


def test_an_unused_new_connection_stays_usable_past_the_header_deadline(served: Served) -> None:
    """Go's HTTP client (the apiserver's) pools a connection it dialed but did not need and may
    send its next admission POST on it much later. Cutting such a connection at the header
    deadline raced that POST, which Go does not retry: the fuzz suite once saw a create refused
    with "failed calling webhook ... write: broken pipe". A new connection is idle until its first
    byte, like a kept-alive one: still usable after the header deadline, closed at the keep-alive
    deadline."""
    keepalive = 5.0  # as webhook_abuse_server.OPTIONS
    ctx = ssl.create_default_context(cafile=served.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=ctx, timeout=10)
    conn.connect()
    try:
        time.sleep(HEADER_TIMEOUT + SLACK)
        conn.request("POST", VALIDATE, review_body("pooled"), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        assert json.loads(resp.read())["response"]["uid"] == "pooled"
    finally:
        conn.close()
    idle = tls_connect(served.port)
    assert idle is not None
    with idle:
        idle.settimeout(keepalive + 10)
        start = time.monotonic()
        try:
            got = idle.recv(1)  # b"": closed by the server (an abort may reset instead)
        except (ConnectionError, ssl.SSLError):
            got = b""
        assert got == b""
        assert keepalive - 0.5 <= time.monotonic() - start <= keepalive + SLACK


def test_a_thousand_connections_are_capped_and_do_not_exhaust_memory(served: Served) -> None:
    """1,000 TLS connections opened as fast as one client can and held silent: the server keeps
    at most its cap open (evicting the longest-waiting) and its memory stays bounded."""

    def run() -> dict[str, Any]:
        socks = [tls_connect(served.port) for _ in range(1000)]
        opened = [s for s in socks if s is not None]
        held = served.stats()["connections"]
        alive = sum(1 for s in opened if not closed_or_answer(s)[0])
        for s in opened:
            s.close()
        return {"opened": len(opened), "still_open_at_client": alive, "held_by_server": held}

    f = attack(served, "thousand_connections", run)
    assert f["still_open_at_client"] <= 128 + 5, f
    assert f["peak_rss_growth_mb"] < 80
    assert f["stall_cpu_s"] < 0.1


# --------------------------------------------------------------------------- ConfigMap lookups


def ws_review(
    namespace: str | None, object_namespace: str, inference: str, tuning: str | None = None
) -> dict[str, Any]:
    ws: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "probe", "namespace": object_namespace},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}, "config": inference},
    }
    if tuning is not None:
        ws["tuning"] = {"config": tuning}
    request: dict[str, Any] = {"uid": "u", "operation": "CREATE", "object": ws}
    if namespace is not None:
        request["namespace"] = namespace
    return request


def config_answer(resp: dict[str, Any], *names: str) -> str:
    """What the denial says about ``inference.config``, with the given names made neutral."""
    causes = resp.get("status", {}).get("details", {}).get("causes", [])
    text = " | ".join(c["message"] for c in causes if c["field"] == "inference.config")
    for name in names:
        text = text.replace(name, "<name>")
    return text


@pytest.mark.cluster
async def test_configmap_lookup_answers_present_but_unreadable_as_absent(
    reliability_cluster: Cluster,
) -> None:
    """A ConfigMap in a namespace the operator may not read, and one in a namespace only the
    object names (the request names none, as no apiserver request does), are answered as absent
    ones are: the webhook is no oracle for what exists where."""
    user = f"webhook-limited-{uuid.uuid4().hex[:6]}"
    async with (
        fresh_namespace(reliability_cluster, "cm-mine") as mine,
        fresh_namespace(reliability_cluster, "cm-theirs") as theirs,
        Client(reliability_cluster.client_configuration()) as admin,
    ):
        # The webhook's client may list ConfigMaps in ``mine`` only.
        await admin.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "view", "namespace": mine},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
            }
        )
        secret_cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "exists", "namespace": theirs},
        }
        await admin.create({**secret_cm, "data": {"inference_config.yaml": "not: [valid"}})
        limited = Client(await load_configuration(reliability_cluster.user_kubeconfig(user)))
        async with limited:
            absent = await validate_request_with_api(ws_review(mine, mine, "nope"), None, limited)
            forbidden = await validate_request_with_api(ws_review(theirs, theirs, "exists"), None, limited)
        # The operator's own role reads every namespace: an object naming one must not be looked in.
        named_present = await validate_request_with_api(ws_review(None, theirs, "exists"), None, admin)
        named_absent = await validate_request_with_api(ws_review(None, theirs, "nope"), None, admin)
        mismatched = await validate_request_with_api(ws_review(mine, theirs, "exists"), None, admin)
    answers = {
        "absent": config_answer(absent, mine, "nope"),
        "forbidden": config_answer(forbidden, theirs, "exists"),
    }
    assert answers["absent"] and answers["absent"] == answers["forbidden"], answers
    named = [
        config_answer(r, theirs, mine, "exists", "nope") for r in (named_present, named_absent, mismatched)
    ]
    assert named[0] and named[0] == named[1] == named[2], named
    for resp in (absent, forbidden, named_present, named_absent, mismatched):
        assert resp["allowed"] is False


@pytest.mark.cluster
async def test_configmap_lookups_share_one_deadline_inside_the_apiserver_timeout(
    reliability_cluster: Cluster,
) -> None:
    """Two ConfigMaps to look up, and an apiserver that holds every ConfigMap list back (a
    loopback proxy in front of it): the answer still comes within the lookup deadline, well
    inside the 10 s the apiserver gives the whole call, and says to try again."""

    async def hold(seen: Seen, chunks: Chunks) -> None:
        if "/configmaps" in seen.path:
            await asyncio.sleep(60)

    async with (
        fresh_namespace(reliability_cluster, "cm-slow") as ns,
        proxied(reliability_cluster.client_configuration(), fault=hold, client_timeout=60) as (
            _proxy,
            client,
        ),
    ):
        t0 = time.monotonic()
        found = await lookup_config_maps(client, ws_review(ns, ns, "inference-cfg", "tuning-cfg"))
        took = time.monotonic() - t0
        resp = await validate_request_with_api(ws_review(ns, ns, "inference-cfg"), None, client)
    FIGURES["lookup_stalled_apiserver"] = {"answered_after_s": round(took, 2), "deadline_s": LOOKUP_TIMEOUT}
    assert took < LOOKUP_TIMEOUT + 2.0, f"answered after {took:.1f}s; the apiserver gives up at 10 s"
    assert found is not None and set(found) == {"inference-cfg", "tuning-cfg"}
    assert all(isinstance(v, str) and "did not answer" in v for v in found.values()), found
    assert resp["allowed"] is False and "did not answer" in config_answer(resp), resp


# --------------------------------------------------------------------------- NetworkPolicy


def helm_render(*sets: str) -> list[dict[str, Any]]:
    from kaito.envtest.assets import K8S_VERSION
    from kaito.envtest.helm import ensure_helm

    cmd = [str(ensure_helm()), "template", "kaito", str(REPO / "charts" / "kaito"), "-n", "kaito-system"]
    cmd += ["--set", "image.repository=localhost:5000/kaito/workspace"]  # required: no published image
    cmd += ["--kube-version", K8S_VERSION, *(a for s in sets for a in ("--set", s))]
    rendered = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def kustomize_render() -> list[dict[str, Any]]:
    from kaito.envtest.assets import ensure_assets

    kubectl = str(ensure_assets(["kubectl"], build=False) / "kubectl")
    cmd = [kubectl, "kustomize", str(REPO / "config" / "default")]
    rendered = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def webhook_port_sources(objs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Per NetworkPolicy on the controller's pods: the peers admitted to the webhook port (an
    empty list of peers would mean everyone); checks the metrics and probe ports stay open."""
    out = []
    for o in objs:
        spec = o.get("spec") or {}
        if o["kind"] != "NetworkPolicy" or spec.get("podSelector", {}).get("matchLabels") != {
            "app.kubernetes.io/component": "controller"
        }:
            continue
        assert "Ingress" in spec["policyTypes"]
        peers: list[dict[str, Any]] = []
        open_ports: set[str] = set()
        for rule in spec.get("ingress", []):
            ports = {str(p["port"]) for p in rule.get("ports", [])} or {"*"}
            if "from" not in rule:
                open_ports |= ports
            elif ports & {"webhook-server", "*"}:
                peers += rule["from"]
        assert "webhook-server" not in open_ports and "*" not in open_ports, spec
        assert {"metrics", "health"} <= open_ports, spec
        out.append(peers)
    return out


def test_network_policy_admits_only_the_apiserver_to_the_webhook_port() -> None:
    """config/default and the chart (on by default, off with networkPolicy.enabled=false): the
    controller's webhook port admits kube-system's pods (konnectivity) and addresses outside the
    pod network (a host-network or external apiserver), no other pod."""
    kube_system = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    for source, objs, pod_cidr in (
        ("config/default", kustomize_render(), "10.244.0.0/16"),
        ("charts/kaito", helm_render(), "10.244.0.0/16"),
        ("charts/kaito podCIDR", helm_render("networkPolicy.podCIDR=10.0.0.0/8"), "10.0.0.0/8"),
    ):
        policies = webhook_port_sources(objs)
        assert len(policies) == 1, f"{source}: {len(policies)} NetworkPolicies on the controller"
        peers = policies[0]
        assert kube_system in peers, f"{source}: {peers}"
        blocks = [p["ipBlock"] for p in peers if "ipBlock" in p]
        assert blocks == [{"cidr": "0.0.0.0/0", "except": [pod_cidr]}], f"{source}: {peers}"
        assert all(set(p) <= {"namespaceSelector", "ipBlock"} for p in peers), f"{source}: {peers}"
    assert webhook_port_sources(helm_render("networkPolicy.enabled=false")) == []
