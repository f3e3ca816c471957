"""``kaito node-provisioner`` refuses bad settings with one line naming the flag, before it
touches a cluster or a cloud."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app
from kaito.operator.nodeprovisioner import NodeProvisionerOptions, validate
from kaito.provisioners.cloud.aks import AksOptions


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
