"""``python -m kaito.localnode --kubeconfig K --state-dir D``: the node agent ``kaito local up`` starts."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from kaito.localnode.agent import Agent, default_venv
from kaito.localnode.images import ImageResolver
from kaito.runtime import Client, configure_logging, load_configuration


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kaito" / "standin" / "phi-3-4k"


async def _main(kubeconfig: str, state_dir: Path, resolver: ImageResolver) -> int:
    config = await load_configuration(kubeconfig)
    async with Client(config, user_agent="kaito-localnode") as client:
        agent = Agent(client, state_dir, resolver)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop_event.set)
        await agent.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kaito.localnode", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", required=True, help="pod folders and container logs live below it")
    p.add_argument("--inference-venv", help="the venv kaito's images map to (default: .venv-inference)")
    p.add_argument("--model-dir", help="folder of local weights, one <preset>/ each (or KAITO_MODEL_DIR)")
    p.add_argument("--registry-ca", help="CA of the local registry (or KAITO_REGISTRY_CA)")
    ns = p.parse_args(argv)
    if os.geteuid() != 0:
        print("kaito local node: needs root (it creates network and mount namespaces)", file=sys.stderr)
        return 2
    configure_logging("console", os.environ.get("KAITO_LOG_LEVEL", "INFO"))
    model_dir = ns.model_dir or os.environ.get("KAITO_MODEL_DIR")
    resolver = ImageResolver(
        venv=Path(ns.inference_venv).resolve() if ns.inference_venv else default_venv(),
        model_root=Path(model_dir).resolve() if model_dir else None,
        standin_dir=_cache_dir(),
        registry_ca=ns.registry_ca or os.environ.get("KAITO_REGISTRY_CA"),
    )
    return asyncio.run(_main(ns.kubeconfig, Path(ns.state_dir).resolve(), resolver))


if __name__ == "__main__":
    sys.exit(main())
