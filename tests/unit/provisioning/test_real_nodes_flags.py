"""``--real-nodes SELECTOR`` (kwok cloud: claims served by adopting an idle real node): the same
selector syntax as ``--local-nodes``, threaded through ``kaito node-provisioner`` and ``kaito
controller``, and refused with one line naming the flag and the fix where it cannot work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kaito.cli.main import app
from kaito.envtest.cluster import REAL_NODE_LABEL as NODE_REGISTERS_WITH
from kaito.envtest.cluster import REAL_NODE_VALUE as NODE_REGISTERS_VALUE
from kaito.operator.nodeprovisioner import NodeProvisionerOptions, in_process_options, validate
from kaito.operator.options import InProcessCloud, OperatorOptions, ProvisionerOptions
from kaito.provisioners.cloud import CloudOptions
from kaito.provisioners.cloud.aks import AksOptions
from kaito.provisioners.cloud.kwok import (
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    ClaimSelector,
    KwokOptions,
    LocalNodes,
    RealNodes,
)


def test_the_cloud_looks_for_the_label_a_real_node_registers_with() -> None:
    assert (REAL_NODE_LABEL, REAL_NODE_VALUE) == (NODE_REGISTERS_WITH, NODE_REGISTERS_VALUE)


def test_real_nodes_selector_is_the_local_nodes_one_and_names_its_flag() -> None:
    assert RealNodes is LocalNodes is ClaimSelector
    sel = ClaimSelector.parse("apps=phi-3,!gone", "--real-nodes")
    assert sel.selector == {
        "matchLabels": {"apps": "phi-3"},
        "matchExpressions": [{"key": "gone", "operator": "DoesNotExist"}],
    }
    for bad in ("apps in (x)", "apps=", "=x", ""):
        with pytest.raises(ValueError, match=r"^--real-nodes: .* \(e\.g\. apps=phi-3\)"):
            ClaimSelector.parse(bad, "--real-nodes")
    with pytest.raises(ValueError, match=r"^--local-nodes: "):
        ClaimSelector.parse("=x")


def test_validate_names_the_flag_and_the_fix() -> None:
    def kwok(**flags: str) -> dict[str, CloudOptions]:
        return {"kwok": KwokOptions(**flags)}

    validate(NodeProvisionerOptions(cloud="kwok", clouds=kwok(real_nodes="all")))
    validate(
        NodeProvisionerOptions(cloud="kwok", clouds=kwok(real_nodes="apps=phi-3", local_nodes="apps=other"))
    )
    with pytest.raises(ValueError, match=r"^--real-nodes: 'apps=' is not a selector term"):
        validate(NodeProvisionerOptions(cloud="kwok", clouds=kwok(real_nodes="apps=")))
    with pytest.raises(ValueError, match=r"^--real-nodes is for --cloud kwok .* not 'aks'; drop it"):
        aks = AksOptions(subscription_id="s", resource_group="g", cluster_name="c")
        validate(NodeProvisionerOptions(cloud="aks", clouds={**kwok(real_nodes="all"), "aks": aks}))


def test_controller_threads_real_nodes_to_its_in_process_provisioner() -> None:
    def options(cloud: str, real_nodes: str) -> OperatorOptions:
        return OperatorOptions(
            provisioner=ProvisionerOptions(name="gpu-provisioner"),
            cloud=InProcessCloud(name=cloud, clouds={"kwok": KwokOptions(real_nodes=real_nodes)}),
        )

    np = in_process_options(options("kwok", "apps=phi-3"))
    assert np is not None and np.options() == KwokOptions(real_nodes="apps=phi-3")
    with pytest.raises(ValueError, match=r"^--real-nodes needs --node-provisioner-cloud kwok"):
        in_process_options(options("", "all"))
    bad = options("kwok", "x=")
    with pytest.raises(ValueError, match=r"^--real-nodes: 'x=' is not a selector term"):
        in_process_options(bad)


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (
            ["node-provisioner", "--cloud", "kwok", "--real-nodes", "apps in (x)"],
            "--real-nodes: 'apps in (x)'",
        ),
        (
            ["node-provisioner", "--cloud", "aks", "--real-nodes", "all", "--subscription-id", "s",
             "--resource-group", "g", "--cluster-name", "c"],
            "--real-nodes is for --cloud kwok",
        ),
        (
            ["controller", "--node-provisioner", "gpu-provisioner", "--real-nodes", "all"],
            "--real-nodes needs --node-provisioner-cloud kwok",
        ),
    ],
)  # fmt: skip
def test_bad_real_nodes_flags_fail_with_one_line(command: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
