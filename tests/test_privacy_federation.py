"""Privacy through real processes: what leaves each site, DP-SGD budgets, site policies.

Every node keeps an egress log (node config `egress-log`): what each reply it sent carried.
The test app (tests/apps/faulty) is fedllm's ClientApp, whose faults here make a node try to
send token ids or review text.
"""

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from safetensors.torch import load_file

from fedllm.orchestration.supervisor import run_job
from fedllm.privacy.egress import METRIC_KEYS
from supernode.privacy_ledger import Release, epsilon
from tests.federations import FAULTY_APP, federation, flwr_log, run_settings

pytestmark = pytest.mark.integration


def egress(run_dir: Path, node: str) -> list[dict[str, Any]]:
    path = run_dir / f"{node}-egress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def adapter_shapes(run_dir: Path) -> dict[str, list[int]]:
    """Names and shapes of the adapter arrays the ServerApp sends (its final adapter)."""
    state = load_file(run_dir / "checkpoints" / "round-1" / "adapter.safetensors")
    return {name: list(tensor.shape) for name, tensor in state.items()}


def test_only_the_adapter_and_allowed_metrics_leave_a_site(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    """Captured twice: by each site's egress guard (its log) and by the ServerApp, which records
    what every reply carried (history.json) whatever code the node ran. node-2 adds token ids,
    then review text, after fedllm's ClientApp replied: only the ServerApp's capture sees that."""
    run_dir = tmp_path / "run"
    logs = [{"egress-log": str(run_dir / f"node-{k}-egress.jsonl")} for k in (1, 2, 3)]
    logs[1]["faults"] = "extra-array,string-metric"
    fed = federation(run_dir, logs)
    run = run_settings(demo_assets, run_dir, num_server_rounds=2, min_nodes=3)
    with fed:
        _, history = run_job(fed, run, FAULTY_APP, Console(), timeout=300)
    shapes = adapter_shapes(run_dir)
    for node in ("node-1", "node-2", "node-3"):  # what fedllm's ClientApp let out
        sent = egress(run_dir, node)
        assert [entry["message-type"] for entry in sent] == ["train", "evaluate"] * 2
        for entry in sent:
            assert entry["blocked"] == [] and entry["configs"] == {}
            assert set(entry["metrics"]) == {"metrics"}
            assert set(entry["metrics"]["metrics"]) <= METRIC_KEYS
            expected = {"arrays": shapes} if entry["message-type"] == "train" else {}
            assert entry["arrays"] == expected
    leaks = {1: ("tokens", "expected one adapter update"), 2: ("review", "config records")}
    for row in history[1:]:
        arrived = {node["site"]: node for node in row["exchanges"]["train"]["nodes"]}
        for site in ("node-1", "node-3"):  # exactly the adapter, scalar metrics we know
            assert "egress-violations" not in arrived[site]
            assert arrived[site]["contents"]["arrays"] == {"arrays": shapes}
            assert arrived[site]["contents"]["configs"] == {}
        record, problem = leaks[row["round"]]
        leaked = arrived["node-2"]
        assert record in leaked["contents"]["arrays"] or record in leaked["contents"]["configs"]
        assert any(problem in found for found in leaked["egress-violations"])
        assert [entry["site"] for entry in row["rejected"]] == ["node-2"]
        assert "records beyond the update" in row["rejected"][0]["reason"]
        assert row["nodes-replied"] == 2 and row["updates-rejected"] == 1  # aggregated: 2


def test_dp_sgd_budgets_and_site_policies(demo_assets: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    strict, lenient = run_dir / "strict.toml", run_dir / "lenient.toml"
    strict.write_text("require-dp = true\nmin-noise-multiplier = 5.0\n")
    lenient.write_text(
        'require-dp = true\nmax-epsilon = 50\nmetrics = ["train-loss", "dp-epsilon", "dp-delta"]\n'
    )
    nodes = [{"privacy-policy": str(strict)}, {"privacy-policy": str(lenient)}, {}]
    for k, node in enumerate(nodes, start=1):
        node["egress-log"] = str(run_dir / f"node-{k}-egress.jsonl")
        node["privacy-ledger"] = str(run_dir / f"node-{k}-ledger.json")
    # One Poisson batch per pass (dp-batch-size above any node's records, run in micro-batches
    # of batch-size) and 2 steps a round:
    # each round spends the same, whatever a node's records.
    noise, delta = 1.0, 1e-3
    spent = [epsilon([Release(1, r, noise, 1.0, 2) for r in range(k)], delta) for k in (1, 2, 3)]
    budget = (spent[1] + spent[2]) / 2  # rounds 1 and 2 fit, round 3 would not
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=3, min_nodes=3, fraction_evaluate=0.0,
        dp="sgd", dp_noise=noise, dp_epsilon=budget, dp_delta=delta, dp_batch_size=512,
        local_steps=2,
    )  # fmt: skip
    fed = federation(run_dir, nodes)
    with fed:
        run_id, history = run_job(fed, run, FAULTY_APP, Console(), timeout=300)
        server_log = flwr_log(fed, run_id)
        metrics = httpx.get(f"http://127.0.0.1:{fed.metrics_ports['superlink']}/metrics").text
    for server_round, row in enumerate(history[1:], start=1):
        trained = {n["site"]: n for n in row["exchanges"]["train"]["nodes"] if "dp-epsilon" in n}
        refused = {entry["site"]: entry["reason"] for entry in row["refused"]}
        assert refused["node-1"].startswith("site policy: noise multiplier 1 below")
        if server_round < 3:
            assert sorted(trained) == ["node-2", "node-3"]
            for node in trained.values():
                assert node["dp-epsilon"] == pytest.approx(spent[server_round - 1], rel=1e-6)
                assert node["dp-delta"] == delta
            assert "peak-rss-bytes" not in trained["node-2"]  # its policy keeps it home
            assert "peak-rss-bytes" in trained["node-3"]
        else:  # both stop at the run's budget
            assert trained == {} and sorted(refused) == ["node-1", "node-2", "node-3"]
            assert refused["node-3"].startswith("run budget spent")
    assert len(re.findall(r"round 3: node-\d \(node \d+\) refused: ", server_log)) == 3
    assert len(json.loads((run_dir / "node-3-ledger.json").read_text())["releases"]) == 2
    assert not (run_dir / "node-1-ledger.json").exists()
    gauge = rf'fedllm_privacy_epsilon{{[^}}]*run_id="{run_id}"[^}}]*site="node-3"[^}}]*}} (\S+)'
    assert float(re.findall(gauge, metrics)[0]) == pytest.approx(spent[1], rel=1e-6)
    for entry in egress(run_dir, "node-2"):
        assert entry["blocked"] == []
        keys = set(entry["metrics"]["metrics"])
        assert keys == {"num-examples", "train-loss", "dp-epsilon", "dp-delta"}


def test_site_level_dp_stops_before_its_budget(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    """dp=server: Flower's wrapper and accountant; ε 2.24, 3.64, 4.86 at δ 1/30 with 3 sites."""
    run_dir = tmp_path / "run"
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=3, min_nodes=3, fraction_evaluate=0.0,
        dp="server", dp_noise=1.0, dp_epsilon=4.0, dp_noise_check=False,
    )  # fmt: skip
    with federation(run_dir, [{}, {}, {}]) as fed:
        run_id, history = run_job(fed, run, FAULTY_APP, Console(), timeout=300)
        server_log = flwr_log(fed, run_id)
    assert [row["round"] for row in history] == [0, 1, 2]
    epsilons = [row["privacy"]["epsilon"] for row in history[1:]]
    assert epsilons == pytest.approx([2.24, 3.64], abs=0.01)
    assert all(row["privacy"]["delta"] == pytest.approx(1 / 30) for row in history[1:])
    assert "stopping before the next round" in server_log
    assert "site-level DP: noise of norm" in server_log  # stated before the first round
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    last = load_file(run_dir / "checkpoints" / "round-2" / "adapter.safetensors")
    assert all(bool((final[name] == last[name]).all()) for name in last)
