"""``kaito local``: a real Kubernetes control plane on this machine, no Docker needed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.status import Status

from kaito.runtime.testing import AssetsError, ClusterError, ensure_assets
from kaito.runtime.testing import local as local_cluster

app = typer.Typer(help="Run a local control plane (etcd, kube-apiserver, kcm, scheduler, kwok).")
console = Console(stderr=True)
StateDir = typer.Option(local_cluster.DEFAULT_STATE_DIR, "--state-dir", help="Where state and logs live.")


def _progress(status: Status) -> Callable[[str], None]:
    """Each build stage as a kept line (CI logs show it) plus the live spinner text."""

    def say(msg: str) -> None:
        console.print(msg)
        status.update(msg)

    return say


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


@app.command()
def assets() -> None:
    """Find or build the control-plane binaries (KUBEBUILDER_ASSETS, cache, else go build)."""
    started = time.monotonic()
    try:
        with console.status("obtaining control-plane binaries") as status:
            folder = ensure_assets(progress=_progress(status))
    except AssetsError as exc:
        _fail(str(exc))
    console.print(f"binaries ready in {folder} ({time.monotonic() - started:.1f}s)")
    typer.echo(str(folder))


@app.command()
def up(state_dir: Path = StateDir, kwok: bool = typer.Option(True, help="Run kwok fake kubelets.")) -> None:
    """Start the cluster in the background (or show the running one)."""
    try:
        with console.status("obtaining control-plane binaries") as status:
            ensure_assets(progress=_progress(status))
            status.update("starting etcd, kube-apiserver, controller-manager, scheduler, kwok")
            state = local_cluster.up(state_dir, kwok=kwok)
    except (AssetsError, ClusterError) as exc:
        _fail(str(exc))
    console.print(
        f"[green]cluster ready[/green] at {state.server} "
        f"(apiserver healthy after {state.ready_seconds}s)"
    )
    console.print(f"kubeconfig: {state.kubeconfig}")
    console.print(f"use: {state.kubectl} --kubeconfig {state.kubeconfig} get nodes")
    typer.echo(state.kubeconfig)


@app.command()
def down(state_dir: Path = StateDir) -> None:
    """Stop the cluster; state (etcd data, PKI) is kept for the next ``up``."""
    if local_cluster.down(state_dir):
        console.print("cluster stopped")
    else:
        console.print("no local cluster running")


@app.command()
def status(state_dir: Path = StateDir) -> None:
    """Say whether the cluster runs, where, and with which processes."""
    state = local_cluster.status(state_dir)
    if state is None:
        console.print("no local cluster running")
        raise typer.Exit(3)
    console.print(f"running at {state.server}; kubeconfig {state.kubeconfig}")
    for name, pid in sorted(state.pids.items()):
        console.print(f"  {name:<26} pid {pid}")
