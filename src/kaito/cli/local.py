"""``kaito local``: a real Kubernetes control plane on this machine, no Docker needed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.status import Status

from kaito.cli.output import Format, dump
from kaito.envtest import AssetsError, ClusterError, ensure_assets, realnode
from kaito.envtest import local as local_cluster
from kaito.envtest.assets import DNS_BINARIES, NODE_BINARIES
from kaito.envtest.noderegistry import ensure_registry_package
from kaito.localnode import cli as node_cli

app = typer.Typer(help="Run a local control plane (etcd, kube-apiserver, kcm, scheduler, kwok).")
console = Console(stderr=True)
StateDir = typer.Option(local_cluster.DEFAULT_STATE_DIR, "--state-dir", help="Where state and logs live.")


def _progress(status: Status) -> Callable[[str], None]:
    """Each build stage as a kept line (CI logs show it) plus the live spinner text."""

    def say(msg: str) -> None:
        console.print(msg)
        status.update(msg)

    return say


def _coredns(status: Status) -> str:
    """Find or build CoreDNS for a real node; "" when it is there, else why it is not (printed
    here, once: the node then runs without cluster DNS, which is no reason to stop)."""
    status.update("obtaining CoreDNS (the real node's cluster DNS)")
    try:
        ensure_assets(DNS_BINARIES, progress=_progress(status))
    except AssetsError as exc:
        console.print(f"[yellow]warning:[/yellow] no cluster DNS on the real node: {exc}")
        return str(exc)
    return ""


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


@app.command()
def assets(
    karpenter: bool = typer.Option(
        False, "--karpenter", help="Also find or build Karpenter's kwok provider (the karpenter peer)."
    ),
    node: bool = typer.Option(
        False,
        "--node",
        help="Also what a real node needs (`kaito local up --node real`): kubelet and kube-proxy, "
        "and, as root, containerd, runc, CNI plugins, iptables and gcc from apt-get.",
    ),
) -> None:
    """Find or build the control-plane binaries (KUBEBUILDER_ASSETS, cache, else go build)."""
    started = time.monotonic()
    try:
        with console.status("obtaining control-plane binaries") as status:
            folder = ensure_assets(progress=_progress(status))
            if node:
                status.update("obtaining kubelet and kube-proxy")
                ensure_assets(NODE_BINARIES, progress=_progress(status))
                _coredns(status)
                if os.geteuid() == 0:
                    status.update("installing containerd, runc, CNI plugins, iptables, gcc (apt-get)")
                    realnode.ensure_packages()
                else:
                    console.print("[yellow]not root:[/yellow] a real node's packages are not installed")
            if karpenter:
                from kaito.envtest.karpenter import ensure_karpenter

                status.update("obtaining Karpenter's kwok provider")
                console.print(f"karpenter-kwok ready in {ensure_karpenter(progress=_progress(status))}")
    except (AssetsError, ClusterError) as exc:
        _fail(str(exc))
    console.print(f"binaries ready in {folder} ({time.monotonic() - started:.1f}s)")
    typer.echo(str(folder))


@app.command()
def up(
    state_dir: Path = StateDir,
    kwok: bool = typer.Option(True, help="Run kwok fake kubelets."),
    node_agent: bool = typer.Option(
        True, help="Run kaito's node agent: pods on nodes labelled kaito.sh/node-agent=local run for real."
    ),
    node: str = typer.Option(
        "agent",
        help="Which node runs real pods: 'real' (containerd + kubelet + kube-proxy in a network "
        "namespace of its own; root, see docs/local-cluster.md), 'agent' (kaito's process agent) or "
        "'none' (kwok's fake nodes only).",
    ),
    registry: bool = typer.Option(
        False,
        "--registry",
        help="With --node real: an image registry on the node's host address (TLS by the cluster "
        "CA, no credentials) that the node's containerd trusts; `kaito local status` prints it.",
    ),
) -> None:
    """Start the cluster in the background (or show the running one)."""
    if node not in ("real", "agent", "none"):
        _fail(f"--node {node!r}: use real, agent or none")
    real = node == "real"
    if real:
        missing = realnode.missing_requirements()
        if missing and os.geteuid() == 0:
            with console.status("installing containerd, runc, CNI plugins, iptables"):
                try:
                    realnode.ensure_packages()
                except ClusterError as exc:
                    _fail(str(exc))
            missing = realnode.missing_requirements()
        if missing:
            _fail("--node real needs: " + "; ".join(missing) + " (or use --node agent)")
    if registry and not real:
        _fail("--registry needs --node real")
    if registry:
        try:
            ensure_registry_package()
        except (OSError, subprocess.CalledProcessError) as exc:
            _fail(f"--registry: docker-registry is missing and could not be installed: {exc}")
    agent = node_agent and node == "agent"
    extra = node_cli.agent_command() if agent else {}
    if agent and not extra:
        console.print("[yellow]warning:[/yellow] not root: no node agent (kwok's fake nodes only)")
    dns_missing = ""
    try:
        with console.status("obtaining control-plane binaries") as status:
            ensure_assets(progress=_progress(status))
            if real:
                status.update("obtaining kubelet and kube-proxy")
                ensure_assets(NODE_BINARIES, progress=_progress(status))
                dns_missing = _coredns(status)
            status.update("starting etcd, kube-apiserver, controller-manager, scheduler, kwok")
            state = local_cluster.up(
                state_dir, kwok=kwok, extra=extra, real_node=real, registry=registry, dns=not dns_missing
            )
    except (AssetsError, ClusterError) as exc:
        _fail(str(exc))
    console.print(
        f"[green]cluster ready[/green] at {state.server} "
        f"(apiserver healthy after {state.ready_seconds}s)"
    )
    console.print(f"kubeconfig: {state.kubeconfig}")
    console.print(f"use: {state.kubectl} --kubeconfig {state.kubeconfig} get nodes")
    if state.registry:
        console.print(f"registry: {state.registry} (CA {state.registry_ca}; no credentials)")
    _print_dns(state)
    typer.echo(state.kubeconfig)


def _print_dns(state: local_cluster.LocalState) -> None:
    if state.dns_error:
        console.print(f"[yellow]warning:[/yellow] {state.dns_error}")
    elif state.dns:
        console.print(f"cluster DNS: {state.dns} (CoreDNS; answers cluster.local only)")


@app.command()
def down(state_dir: Path = StateDir) -> None:
    """Stop the cluster; state (etcd data, PKI) is kept for the next ``up``."""
    if local_cluster.down(state_dir):
        console.print("cluster stopped")
    else:
        console.print("no local cluster running")


@app.command()
def status(
    state_dir: Path = StateDir,
    output: Format = typer.Option(
        Format.table, "--output", "-o", help="table (default), or json|yaml: one document for scripts"
    ),
) -> None:
    """Say whether the cluster runs, where, and with which processes (exit 3 when none runs)."""
    state = local_cluster.status(state_dir)
    if output in (Format.json, Format.yaml):
        doc: dict[str, object] = {"kind": "LocalClusterStatus", "running": state is not None}
        if state is not None:
            doc.update(dataclasses.asdict(state))
        dump(doc, output)
        if state is None:
            raise typer.Exit(3)
        return
    if state is None:
        console.print("no local cluster running")
        raise typer.Exit(3)
    console.print(f"running at {state.server}; kubeconfig {state.kubeconfig}")
    if state.registry:
        console.print(f"registry {state.registry} (CA {state.registry_ca}; no credentials)")
    _print_dns(state)
    for name, pid in sorted(state.pids.items()):
        console.print(f"  {name:<26} pid {pid}")


@app.command()
def logs(
    pod: str = typer.Argument(..., help="Pod name (on a kaito local node)."),
    container: str = typer.Option("", "-c", "--container", help="Container name (default: the only one)."),
    namespace: str = typer.Option("default", "-n", "--namespace"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    previous: bool = typer.Option(False, "-p", "--previous", help="The run before the last restart."),
    state_dir: Path = StateDir,
) -> None:
    """Print a container's log from a kaito local node (kwok's fake pods have none)."""
    try:
        node_cli.print_logs(state_dir, namespace, pod, container, follow=follow, previous=previous)
    except node_cli.LocalNodeError as exc:
        _fail(str(exc))


@app.command("port-forward")
def port_forward(
    target: str = typer.Argument(..., help="svc/NAME or pod/NAME"),
    ports: str = typer.Argument(..., help="LOCAL:REMOTE (Service port for svc/, container port for pod/)"),
    namespace: str = typer.Option("default", "-n", "--namespace"),
    address: str = typer.Option("127.0.0.1", "--address", help="Loopback address to listen on."),
    kubeconfig: str = typer.Option("", "--kubeconfig", help="Another cluster than the local one."),
    state_dir: Path = StateDir,
) -> None:
    """Forward a loopback port to a pod on a kaito local node (follows the Service's ready pods)."""
    if not kubeconfig:
        state = local_cluster.status(state_dir)
        if state is None:
            _fail(f"no local cluster running in {state_dir}; run `kaito local up`")
            return
        kubeconfig = state.kubeconfig
    try:
        node_cli.port_forward(kubeconfig, namespace, target, ports, address, console.print)
    except node_cli.LocalNodeError as exc:
        _fail(str(exc))
