"""``kaito node-provisioner`` refuses bad settings with one line naming the flag, before it
touches a cluster or a cloud."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app
from kaito.operator.nodeprovisioner import NodeProvisionerOptions, validate
from kaito.provisioners.cloud.aks import AksOptions
from kaito.provisioners.cloud.kwok import KwokOptions


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cloud", "gce"], "--cloud 'gce' is not supported"),
        (["--cloud", "aks", "--subscription-id", "s"], "--resource-group, --cluster-name"),
        (
            ["--cloud", "kwok", "--leader-elect", "--lease-duration", "8", "--renew-deadline", "9"],
            "--lease-duration 8 > --renew-deadline 9 > --retry-period 2 > 0 must hold",
        ),
    ],
)
def test_bad_flags_fail_with_one_line(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["node-provisioner", *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0]


def test_complete_aks_settings_validate() -> None:
    aks = AksOptions(subscription_id="s", resource_group="g", cluster_name="c")
    validate(NodeProvisionerOptions(cloud="aks", clouds={"aks": aks}))
    validate(NodeProvisionerOptions(cloud="kwok"))


def _parsed(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> NodeProvisionerOptions:
    """The options ``kaito node-provisioner ARGS`` builds (stopped before it connects)."""
    import kaito.cli.node_provisioner as cli

    seen: list[NodeProvisionerOptions] = []

    def capture(options: NodeProvisionerOptions) -> None:
        seen.append(options)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "validate", capture)
    result = CliRunner().invoke(app, ["node-provisioner", *args], env=env)
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    return seen[0]


def test_cloud_flags_come_from_the_registry_and_env_reaches_only_the_chosen_cloud(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"AZURE_SUBSCRIPTION_ID": "sub-1", "AZURE_RESOURCE_GROUP": "rg-1", "AZURE_CLUSTER_NAME": "c-1"}
    aks = _parsed(monkeypatch, ["--cloud", "aks", "--polling-interval", "0.5", "--os-sku", "AzureLinux"], env)
    assert aks.options() == AksOptions(
        subscription_id="sub-1",
        resource_group="rg-1",
        cluster_name="c-1",
        polling_interval=0.5,
        os_sku="AzureLinux",
    )
    # The environment a pod happens to carry is no setting for a cloud that is not chosen ...
    kwok = _parsed(monkeypatch, ["--cloud", "kwok", "--real-nodes", "all"], env)
    assert kwok.clouds["aks"] == AksOptions() and kwok.options() == KwokOptions(real_nodes="all")
    # ... but a flag given for it is, so that validate can refuse it by name.
    given = _parsed(monkeypatch, ["--cloud", "kwok", "--cluster-name", "x"], {})
    assert given.clouds["aks"] == AksOptions(cluster_name="x")
    with pytest.raises(ValueError, match=r"^--cluster-name is for --cloud aks .* not 'kwok'; drop it"):
        validate(given)


def test_the_registry_loads_no_cloud_sdk_until_that_cloud_is_chosen() -> None:
    """Every cloud's options are imported for the flags; its SDK only by its factory."""
    import subprocess
    import sys

    code = (
        "import sys, kaito.cli.main\n"
        "from kaito.operator.nodeprovisioner import NodeProvisionerOptions, validate\n"
        "validate(NodeProvisionerOptions(cloud='kwok'))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('azure')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
