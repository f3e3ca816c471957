"""``--feature-gates`` (issue 20, bug 10): upstream Kaito's gate names are known; a gate kaito
does not implement, or one nobody knows, stops ``kaito controller`` at start with one line naming
it, instead of being parsed and ignored."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import Configuration
from typer.testing import CliRunner

from kaito.cli.main import app
from kaito.operator import OperatorOptions
from kaito.operator.featuregates import KNOWN, UNIMPLEMENTED


def test_unknown_feature_gate_is_refused_naming_it_and_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["controller", "--feature-gates", "vLLM=true,fastLane=true"])
    assert result.exit_code == 2
    (line,) = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "unknown gate 'fastLane'" in line
    assert all(name in line for name in KNOWN)


@pytest.mark.parametrize("gate", sorted(UNIMPLEMENTED))
def test_upstream_gate_kaito_does_not_implement_is_refused_when_turned_on(gate: str) -> None:
    result = CliRunner().invoke(app, ["controller", "--feature-gates", f"vLLM=true,{gate}=true"])
    assert result.exit_code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.strip()]
    assert f"gate {gate}=true is upstream Kaito's but kaito does not implement it" in line


def test_upstream_gates_turned_off_are_what_kaito_does() -> None:
    """A values file copied from upstream that lists its gates as false keeps working: kaito
    lacks those features, so off is exactly its behaviour."""
    from kaito.operator.featuregates import parse_feature_gates

    every_off = ",".join(f"{g}=false" for g in sorted(UNIMPLEMENTED))
    assert parse_feature_gates(f"vLLM=true,{every_off}").vllm is True


def test_vllm_off_is_refused_on_the_programmatic_path_too() -> None:
    from kaito.operator import build_operator
    from kaito.operator.featuregates import FeatureGates

    cfg = Configuration()
    cfg.host = "https://127.0.0.1:1"
    with pytest.raises(ValueError, match="vLLM=false is not supported"):
        build_operator(cfg, OperatorOptions(feature_gates=FeatureGates(vllm=False)))


def test_inferenceset_gate_is_on_by_default_and_can_be_turned_off() -> None:
    """Upstream's ``enableInferenceSetController`` (on by default there too): off builds an
    operator without the InferenceSet controller, for a cluster without its CRD."""
    from kaito.operator import build_operator
    from kaito.operator.featuregates import FeatureGates, parse_feature_gates

    assert parse_feature_gates("").inference_set is True
    assert parse_feature_gates("enableInferenceSetController=false").inference_set is False
    cfg = Configuration()
    cfg.host = "https://127.0.0.1:1"
    assert build_operator(cfg, OperatorOptions()).inferenceset is not None
    off = OperatorOptions(feature_gates=FeatureGates(inference_set=False))
    assert build_operator(cfg, off).inferenceset is None
