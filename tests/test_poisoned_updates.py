"""Poisoned updates through real processes: the ServerApp drops exactly the corrupted replies.

The federation runs the test-only app in tests/apps/faulty: fedllm's own ServerApp and a
ClientApp that trains like fedllm's, then corrupts its reply on the nodes whose node config
says so (NaN/Inf arrays, the update scaled 1000x, a misshapen array).
"""

import json
import math
import re
import tomllib
from pathlib import Path

import httpx
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from fedllm.orchestration.supervisor import run_job
from tests.federations import FAULT, FAULTY_APP, ROOT, federation, flwr_log, run_settings

MAX_UPDATE_NORM = 10.0  # an honest update here moves the adapter by ~0.1, a 1000x one by ~100
REASONS = {"nan": "contains NaN or Inf", "scale": "exceeds max-update-norm", "shape": "shape/dtype"}


def test_the_test_app_takes_fedllms_run_config() -> None:
    """Flower refuses run-config keys the app has no default for: both must list the same."""

    def config(path: Path) -> dict[str, object]:
        return dict(tomllib.loads(path.read_text())["tool"]["flwr"]["app"]["config"])

    copy, original = config(FAULTY_APP / "pyproject.toml"), config(ROOT / "pyproject.toml")
    assert copy == original, "copy [tool.flwr.app.config] from pyproject.toml to the test app"


def l2(state: dict[str, torch.Tensor], other: dict[str, torch.Tensor] | None = None) -> float:
    """L2 norm of a state dict, or of its difference from `other`."""
    total = 0.0
    for name, tensor in state.items():
        value = tensor.double() - (other[name].double() if other is not None else 0.0)
        total += float(value.square().sum())
    return math.sqrt(total)


@pytest.mark.integration
def test_corrupted_updates_are_rejected_and_the_rest_aggregated(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # Round 1: node-1 sends NaN/Inf, node-2 a misshapen array; round 2: node-1 sends 1000x.
    fed = federation(run_dir, [{"faults": "nan,scale"}, {"faults": "shape"}, {}])
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=2, min_nodes=3, fraction_evaluate=0.0,
        max_update_norm=MAX_UPDATE_NORM,
    )  # fmt: skip
    with fed:
        run_id, history = run_job(fed, run, FAULTY_APP, Console(), timeout=300)
        server_log = flwr_log(fed, run_id)
        metrics = httpx.get(f"http://127.0.0.1:{fed.metrics_ports['superlink']}/metrics").text

    poisoned = set()  # (round, node id, site, reason)
    for name in ("node-1", "node-2"):
        injected = FAULT.findall((fed.state / "logs" / f"{name}.log").read_text())
        poisoned |= {(int(rnd), int(node), name, REASONS[fault]) for node, rnd, fault in injected}
    assert {(rnd, mode) for rnd, _, _, mode in poisoned} == {
        (1, REASONS["nan"]), (1, REASONS["shape"]), (2, REASONS["scale"])
    }  # fmt: skip
    # Named by the site each node was registered as (its certificate CN), with its id.
    found = re.findall(r"round (\d+): update from (\S+) \(node (\d+)\) rejected: (.*)", server_log)
    rejected = {(int(rnd), int(node), site): reason for rnd, site, node, reason in found}
    assert len(found) == len(rejected) == 3, server_log
    assert set(rejected) == {(rnd, node, site) for rnd, node, site, _ in poisoned}
    assert all(why in rejected[rnd, node, site] for rnd, node, site, why in poisoned)
    in_history = {(row["round"], entry["node"], entry["site"])
                  for row in history for entry in row.get("rejected", [])}  # fmt: skip
    assert in_history == set(rejected)

    assert [row["round"] for row in history] == [0, 1, 2]
    counts = [
        {key: row[key] for key in ("nodes-sampled", "nodes-replied", "updates-rejected")}
        for row in history[1:]
    ]
    assert counts == [
        {"nodes-sampled": 3, "nodes-replied": 1, "updates-rejected": 2},
        {"nodes-sampled": 3, "nodes-replied": 2, "updates-rejected": 1},
    ]
    assert all(row["nodes-failed"] == 0 for row in history[1:])
    counter = rf'fedllm_updates_rejected_total{{([^}}]*run_id="{run_id}"[^}}]*)}} (\S+)'
    per_site = {re.findall(r'site="([^"]*)"', labels)[0]: float(count)
                for labels, count in re.findall(counter, metrics)}  # fmt: skip
    assert per_site == {"node-1": 2.0, "node-2": 1.0, "node-3": 0.0}, metrics
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"

    rounds = [load_file(run_dir / f"checkpoints/round-{k}/adapter.safetensors") for k in (1, 2)]
    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    for state in [*rounds, final]:
        assert all(torch.isfinite(tensor).all() for tensor in state.values())
    # FedAvg of accepted updates moves the adapter no further than the bound each one kept.
    assert l2(rounds[1], rounds[0]) <= MAX_UPDATE_NORM
    assert l2(final) == pytest.approx(l2(rounds[1]), rel=1e-4)
