"""pytest fixtures over :class:`~kaito.envtest.Cluster`, registered as a pytest plugin.

Installing kaito registers this module under pytest's ``pytest11`` entry point, so an operator's
test suite gets the fixtures with no conftest line:

``kube_cluster``
    One real control plane (etcd + kube-apiserver) per test session: start-up costs seconds, so
    tests share it and keep apart by namespace. Tests that break the cluster on purpose make their
    own ``Cluster``.
``kube_client``
    A :class:`kaito.runtime.Client` with admin rights on it, one per test.
``namespace``
    A fresh namespace for one test, deleted afterwards.
``api_client``
    A kubernetes-asyncio ``ApiClient``, for suites written against that library (needs the
    ``kaito[operator]`` extra or kubernetes-asyncio installed).

The session cluster runs only etcd and kube-apiserver unless asked for more: the
controller-manager (Deployments get Pods, namespaces get finalized), the scheduler, and kwok (fake
Nodes go Ready, Pods on them Running), through the ``kaito_envtest_components`` ini option or
``--kaito-envtest-components controller-manager,scheduler,kwok``. A suite that needs none of them
starts faster and uses less memory.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kaito.envtest.cluster import Cluster, ClusterOptions
from kaito.runtime import NAMESPACE, Client, load_configuration

try:  # async fixtures must be pytest-asyncio's to run in its strict mode too
    from pytest_asyncio import fixture as async_fixture
except ModuleNotFoundError:  # pragma: no cover - without it only kube_cluster is usable
    # (the plugin loads in every pytest run of a venv holding kaito: it must not break those)
    async_fixture = pytest.fixture  # type: ignore[assignment]  # same decorator shape, sync runner

#: What the session cluster may run besides etcd and kube-apiserver.
COMPONENTS = ("controller-manager", "scheduler", "kwok")
_INI = "kaito_envtest_components"
_FLAG = "--kaito-envtest-components"


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "what the session cluster (kube_cluster) runs besides etcd and kube-apiserver: "
        f"any of {', '.join(COMPONENTS)}, comma- or space-separated (default: none)"
    )
    parser.addini(_INI, help_text, type="args", default=[])
    parser.getgroup("kaito-envtest").addoption(_FLAG, default=None, help=help_text)


def pytest_configure(config: pytest.Config) -> None:
    session_components(config)  # a typo stops the run before any test, as a usage error


def session_components(config: pytest.Config) -> set[str]:
    """The components asked for (the flag wins over the ini option); an unknown one is a usage
    error naming the option and the choices, not a silently smaller cluster."""
    flag = config.getoption(_FLAG)
    raw: list[str] = flag.replace(",", " ").split() if flag is not None else list(config.getini(_INI))
    asked = {part for item in raw for part in item.split(",") if part}
    unknown = sorted(asked - set(COMPONENTS))
    if unknown:
        where = _FLAG if flag is not None else f"ini option {_INI}"
        raise pytest.UsageError(
            f"{where}: unknown component {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}"
        )
    return asked


@pytest.fixture(scope="session")
def kube_cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    asked = session_components(pytestconfig)
    cluster = Cluster(
        ClusterOptions(
            controller_manager="controller-manager" in asked,
            scheduler="scheduler" in asked,
            kwok="kwok" in asked,
        )
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@async_fixture
async def kube_client(kube_cluster: Cluster) -> AsyncIterator[Client]:
    """A :class:`kaito.runtime.Client` with admin rights on the session cluster."""
    config = await load_configuration(str(kube_cluster.kubeconfig))
    async with Client(config, user_agent="kaito-envtest") as client:
        yield client


@async_fixture
async def api_client(kube_cluster: Cluster) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient with admin rights on the session cluster."""
    try:
        from kubernetes_asyncio.client import ApiClient
    except ModuleNotFoundError as exc:  # a clear error, not a skip: the test asked for it
        raise RuntimeError(
            "the api_client fixture needs kubernetes-asyncio (pip install 'kaito[operator]'); "
            "kube_client gives a kaito.runtime.Client without it"
        ) from exc

    client = ApiClient(kube_cluster.client_configuration())
    try:
        yield client
    finally:
        await client.close()


@async_fixture
async def namespace(kube_client: Client, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for finalization)."""
    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-") or "test"
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    await kube_client.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kaito.sh/test": "true"}},
        }
    )
    try:
        yield name
    finally:
        await kube_client.delete(NAMESPACE, name, ignore_not_found=True)
