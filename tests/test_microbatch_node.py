"""The node's side: `plan` reads the node settings, and Prometheus gets what adapting did."""

from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from prometheus_client import REGISTRY

from fedllm.settings import RunSettings, build
from fedllm.telemetry.micro_batches import record_micro_batching
from supernode.adaptation import Adaptation
from supernode.microbatch import plan
from supernode.site import Site, open_site


def site_with(demo_assets: tuple[Path, Path], tmp_path: Path, **node: object) -> Site:
    """The demo node's site, with `node` added to its node config."""
    run = build(RunSettings, model=str(demo_assets[0]), dataset=str(demo_assets[1]), batch_size=8)
    node_config = {"threads": 1, "cache-dir": str(tmp_path / "cache"), **node}
    return open_site(Context(1, 1, node_config, RecordDict(), run.to_run_config()))  # type: ignore[arg-type]


def test_plan_fits_within_the_batch_with_the_node_settings(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    site = site_with(demo_assets, tmp_path, **{"memory-pressure": 0.3, "memory-calm-steps": 5})
    adaptation = plan(site)
    assert adaptation is not None
    assert 1 <= adaptation.micro_batch == adaptation.fitted <= 8
    assert (adaptation.threshold, adaptation.calm_steps) == (0.3, 5)
    assert adaptation.budget_bytes > 0 and adaptation.row_bytes >= 0
    assert all(p.grad is None for p in site.model.parameters())


def test_plan_is_off_when_the_node_says_so(demo_assets: tuple[Path, Path], tmp_path: Path) -> None:
    assert plan(site_with(demo_assets, tmp_path, **{"adapt-memory": False})) is None


def value(name: str, **labels: str) -> float | None:
    """A sample of run 77 from the default registry."""
    return REGISTRY.get_sample_value(name, {"run_id": "77", **labels})


def test_prometheus_says_what_adapting_did() -> None:
    adaptation = Adaptation(micro_batch=8, ceiling=8, checkpointing=True, budget_bytes=2e9)
    adaptation.out_of_memory()
    adaptation.pressure_max = 0.25
    before = value("fedllm_node_memory_adaptations_total", reason="oom")
    record_micro_batching(77, adaptation)
    assert before is None
    assert value("fedllm_node_micro_batch") == 4
    assert value("fedllm_node_micro_batch_fitted") == 8
    assert value("fedllm_node_gradient_checkpointing") == 1
    assert value("fedllm_node_memory_budget_bytes") == 2e9
    assert value("fedllm_node_memory_pressure_max_ratio") == pytest.approx(0.25)
    assert value("fedllm_node_memory_adaptations_total", reason="oom") == 1
    assert value("fedllm_node_memory_adaptations_total", reason="pressure") == 0
