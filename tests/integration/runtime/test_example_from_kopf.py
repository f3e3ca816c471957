"""docs/from-kopf.md's kaito.runtime operator (examples/from_kopf/operator.py) on the real apiserver.

The page's kaito.runtime code blocks are checked to be the example file's own text, and the file
is run: create, update, a deleted child, a spec no retry can fix, and deletion through the
finalizer. The page's kopf code is run too (``kopf run``), and must make the same ConfigMap.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.envtest import eventually as poll
from kaito.runtime import GVK, Client, NotFoundError, get_condition

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "from_kopf" / "operator.py"
PAGE = ROOT / "docs" / "from-kopf.md"
CRD = GVK("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
MARK = "<!-- kaito.runtime: examples/from_kopf/operator.py -->"


def load_operator() -> Any:
    spec = importlib.util.spec_from_file_location("from_kopf_operator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["from_kopf_operator"] = mod
    spec.loader.exec_module(mod)
    return mod


op = load_operator()


def test_the_page_shows_the_example_file() -> None:
    """Every kaito.runtime block on the page is a verbatim piece of the file that runs below."""
    page, source = PAGE.read_text(), EXAMPLE.read_text()
    blocks = re.findall(re.escape(MARK) + r"\n```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 3, "the page lost its kaito.runtime blocks"
    for block in blocks:
        assert block in source, block[:200]


async def eventually(cond: Callable[[], Any], limit_s: float = 20.0) -> Any:
    """kaito.envtest's poll, at this page's pace."""
    return await poll(cond, "the example's next state", timeout=limit_s, interval=0.05)


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        crd = yaml.safe_load((ROOT / "examples/greeting/crd.yaml").read_text())
        try:
            await c.create(crd)
        except Exception as exc:  # already installed by an earlier test in this session
            if getattr(exc, "status", None) != 409:
                raise

        async def established() -> bool:
            got = await c.get(CRD, crd["metadata"]["name"], cached=False)
            conds = (got.get("status") or {}).get("conditions") or []
            return any(x["type"] == "Established" and x["status"] == "True" for x in conds)

        await eventually(established)
        yield c


async def test_from_kopf_operator(kube_cluster: Any, namespace: str, kclient: Client) -> None:
    mgr = op.build_manager(kube_cluster.client_configuration(), namespace=namespace, handle_signals=False)
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 20)
        await kclient.create(
            {
                "apiVersion": "example.kaito.sh/v1alpha1",
                "kind": "Greeting",
                "metadata": {"name": "hello", "namespace": namespace},
                "spec": {"message": "Hello"},
            }
        )

        async def greeting() -> dict[str, Any]:
            return await kclient.get(op.GREETING, "hello", namespace, cached=False)

        async def ready() -> dict[str, Any] | None:
            g = await greeting()
            cond = get_condition(g, "Ready")
            ok = (
                cond
                and cond["status"] == "True"
                and g["status"]["observedGeneration"] == g["metadata"]["generation"]
            )
            return g if ok else None

        g = await eventually(ready)
        assert g["metadata"]["finalizers"] == [op.FINALIZER]
        assert g["status"]["configMap"] == "greeting-hello"

        async def text() -> str | None:
            try:
                cm = await kclient.get(op.CONFIGMAP, "greeting-hello", namespace, cached=False)
            except NotFoundError:
                return None
            assert cm["metadata"]["ownerReferences"][0]["uid"] == g["metadata"]["uid"]
            return str(cm["data"]["greeting"])

        assert await eventually(text) == "Hello, world!"

        # on.update: a spec change reaches the ConfigMap
        await kclient.patch(op.GREETING, "hello", {"spec": {"who": "kopf user"}}, namespace)
        await eventually(lambda: _eq(text(), "Hello, kopf user!"))

        # what kopf needs a second handler for: the child deleted behind the operator's back
        await kclient.delete(op.CONFIGMAP, "greeting-hello", namespace)
        await eventually(lambda: _eq(text(), "Hello, kopf user!"))

        # kopf.PermanentError -> TerminalError: no retries; the last good state stays
        await kclient.patch(op.GREETING, "hello", {"spec": {"message": "two\nlines"}}, namespace)
        sample = mgr.metrics.registry.get_sample_value

        def terminal() -> bool:
            labels = {"controller": "greeting-from-kopf"}
            return bool((sample("controller_runtime_terminal_reconcile_errors_total", labels) or 0) >= 1)

        await eventually(terminal)
        assert await text() == "Hello, kopf user!"

        # on.delete: the finalizer step runs, then the object goes
        await kclient.delete(op.GREETING, "hello", namespace)

        async def gone() -> bool:
            try:
                await greeting()
            except NotFoundError:
                return True
            return False

        await eventually(gone)
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 20)


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_the_page_kopf_operator_runs(
    kube_cluster: Any, namespace: str, kclient: Client, tmp_path: Path
) -> None:
    """The page's kopf code, as written, under ``kopf run`` on the same apiserver: it makes the same
    ConfigMap, so the two columns of the page describe the same operator."""
    code = re.search(r"## The kopf operator\n\n```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert code is not None
    script = tmp_path / "kopf_greeting.py"
    script.write_text(code.group(1))
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace, str(script),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await kclient.create(
            {
                "apiVersion": "example.kaito.sh/v1alpha1",
                "kind": "Greeting",
                "metadata": {"name": "from-kopf", "namespace": namespace},
                "spec": {"message": "Hello", "who": "kopf"},
            }
        )

        async def text() -> str | None:
            try:
                cm = await kclient.get(op.CONFIGMAP, "greeting-from-kopf", namespace, cached=False)
            except NotFoundError:
                return None
            return str(cm["data"]["greeting"])

        assert await eventually(text, limit_s=60) == "Hello, kopf!"

        async def status() -> str | None:
            g = await kclient.get(op.GREETING, "from-kopf", namespace, cached=False)
            return (g.get("status") or {}).get("configMap")

        assert await eventually(status, limit_s=30) == "greeting-from-kopf"
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert b"Traceback" not in err, err.decode()[-2000:]
