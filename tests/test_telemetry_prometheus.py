"""End to end: a local federation scraped by Debian's real Prometheus, read over its HTTP API.

`fedllm up --prometheus` runs 2 nodes for 2 rounds; afterwards a second Prometheus opens the same
storage so the test can query what was scraped. The Grafana dashboard is checked against the
metric names that run really exported.
"""

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedllm.orchestration.ports import free_port
from fedllm.telemetry.cgroup import memory_cgroup, pressure_file
from fedllm.telemetry.memory import read_pressure
from fedllm.telemetry.prometheus import LocalPrometheus
from tests.test_telemetry_dashboard import DASHBOARD, ONLY_WITH_DP, queried_metrics, with_panel

pytestmark = [pytest.mark.prometheus, pytest.mark.integration]
NODES = {"node-1", "node-2"}
DAY = 86400


class Api:
    """Prometheus' HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30).json()
        assert reply["status"] == "success", reply
        return reply["data"]

    def latest(self, selector: str) -> dict[str, float]:
        """Last scraped value of each series, keyed by its `node` label (or the series)."""
        result = self.get("query", query=f"last_over_time({selector}[1h])")["result"]
        return {row["metric"].get("node", str(row["metric"])): float(row["value"][1])
                for row in result}  # fmt: skip

    def only(self, selector: str) -> float:
        """Last scraped value of a selector that matches exactly one series."""
        [value] = self.latest(selector).values()
        return value


@pytest.fixture(scope="module")
def api(demo_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A finished 2-node, 2-round `fedllm up --prometheus`, its Prometheus storage reopened."""
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus binary is not installed (apt-get install prometheus)")
    model_dir, reviews = demo_assets
    run_dir = tmp_path_factory.mktemp("telemetry") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "fedllm", "up", "--nodes", "2", "--rounds", "2",
         "--model", str(model_dir), "--dataset", str(reviews), "--run-dir", str(run_dir),
         "--set", "lr=0.005", "--set", "max-length=64", "--timeout", "400",
         "--prometheus", "--prometheus-port", str(free_port())],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Prometheus on http://127.0.0.1:" in result.stdout
    with LocalPrometheus(run_dir / "state" / "prometheus", {}, free_port()) as prometheus:
        yield Api(prometheus.url)


def test_rounds_completed_reaches_two(api: Api) -> None:
    assert api.only("fedllm_rounds_completed_total") == 2
    assert api.only("fedllm_round_duration_seconds_count") == 2
    assert api.only('fedllm_run_state{state="finished"}') == 1


def test_both_nodes_reported_throughput_and_rss(api: Api) -> None:
    for selector in (
        "fedllm_node_examples_per_second",
        "fedllm_node_tokens_per_second",
        'fedllm_process_resident_memory_bytes{process="clientapp"}',
        'fedllm_process_peak_resident_memory_bytes{process="clientapp"}',
    ):
        reported = api.latest(selector)
        assert set(reported) == NODES, selector
        assert all(value > 0 for value in reported.values()), selector
    assert api.latest('fedllm_process_resident_memory_bytes{process="serverapp"}')["superlink"] > 0


def test_memory_pressure_series_exist_for_every_role(api: Api) -> None:
    """PSI and cgroup series wherever this host has them (the readers are fixture-tested)."""
    roles = {"superlink", *NODES}
    assert set(api.latest("fedllm_memory_available_bytes")) == roles
    has_psi, has_cgroup = bool(read_pressure(pressure_file())), memory_cgroup() is not None
    if has_psi:
        for kind in ("some", "full"):
            selector = f'fedllm_memory_pressure_ratio{{kind="{kind}", window="60s"}}'
            assert set(api.latest(selector)) == roles
    if has_cgroup:
        assert set(api.latest("fedllm_cgroup_memory_usage_bytes")) == roles
        assert set(api.latest("fedllm_cgroup_memory_limit_bytes")) == roles
    if not (has_psi or has_cgroup):
        pytest.skip("this host has neither PSI nor a memory cgroup")


def test_round_results_and_participation(api: Api) -> None:
    for phase in ("train", "evaluate"):
        assert api.only(f'fedllm_round_nodes_sampled{{phase="{phase}"}}') == 2
        assert api.only(f'fedllm_round_nodes_replied{{phase="{phase}"}}') == 2
        assert api.only(f'fedllm_round_nodes_failed{{phase="{phase}"}}') == 0
        assert api.only(f'fedllm_round_sent_bytes{{phase="{phase}"}}') > 0
    assert api.only('fedllm_round_received_bytes{phase="train"}') > 0
    for evaluation in ("centralized", "federated"):
        assert 0 <= api.only(f'fedllm_round_accuracy_ratio{{evaluation="{evaluation}"}}') <= 1


def test_certificates_are_far_from_expiry(api: Api) -> None:
    result = api.get("query", query="last_over_time(fedllm_certificate_expiry_seconds[1h])")
    expiry = {(row["metric"]["node"], row["metric"]["certificate"]): float(row["value"][1])
              for row in result["result"]}  # fmt: skip
    assert set(expiry) >= {("superlink", "superlink"), ("node-1", "node-1"), ("node-2", "ca")}
    assert min(expiry.values()) > 14 * DAY


def test_alert_rules_are_loaded_and_evaluate(api: Api) -> None:
    deadline = time.monotonic() + 60
    while True:
        rules = [rule for group in api.get("rules")["groups"] for rule in group["rules"]]
        if time.monotonic() > deadline or all(rule["health"] != "unknown" for rule in rules):
            break
        time.sleep(1)  # not evaluated yet
    assert {rule["name"] for rule in rules} >= {"FedllmSuperNodeDown", "FedllmRoundStalled"}
    assert all(rule["health"] == "ok" for rule in rules), rules


def test_dashboard_queries_only_metrics_the_run_exported(api: Api) -> None:
    exported = set(api.get("label/__name__/values"))
    assert queried_metrics(DASHBOARD) - exported == ONLY_WITH_DP  # this run has no DP
    bad = with_panel("fedllm_made_up_bytes / fedllm_memory_total_bytes")
    assert queried_metrics(bad) - exported - ONLY_WITH_DP == {"fedllm_made_up_bytes"}
