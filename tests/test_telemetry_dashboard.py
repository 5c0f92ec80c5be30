"""The Grafana dashboard: every PromQL expression it holds, and the metric names they select.

The end-to-end test (test_telemetry_prometheus.py) compares these names with the ones a real run
exported; the tests here show the parsing is right and an unknown metric is caught.
"""

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from fedllm.telemetry.rounds import RunTelemetry

GRAFANA = Path(__file__).resolve().parents[1] / "docker" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "fedllm.json").read_text())
STRINGS = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Queried metrics a run exports only with DP on (checked by a DP round below).
ONLY_WITH_DP = {"fedllm_privacy_epsilon"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = STRINGS.sub("", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every panel query, rows' nested panels included, and each variable's metric."""
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        yield from (target["expr"] for target in panel.get("targets", []))
    for variable in dashboard["templating"]["list"]:
        yield from re.findall(r"label_values\(\s*([\w:]+)", variable["query"]["query"])


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    """Every metric name the dashboard queries."""
    return {name for expr in dashboard_expressions(dashboard) for name in metric_names(expr)}


def with_panel(expr: str) -> dict[str, Any]:
    """The dashboard plus a collapsed row holding one panel that queries `expr`."""
    dashboard = copy.deepcopy(DASHBOARD)
    panel = {"type": "stat", "targets": [{"expr": expr}]}
    dashboard["panels"].append({"type": "row", "collapsed": True, "panels": [panel]})
    return dashboard


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('fedllm_a{node=~"$node", x="by (y)"}', {"fedllm_a"}),
        ("histogram_quantile(0.5, sum by (le) (rate(b_bucket[$__rate_interval])))", {"b_bucket"}),
        ("time() - c > 1800 and on (run_id) d{state='running'} == 1", {"c", "d"}),
        ("max by (state) (e offset 5m) / 1e3 + sum without (node) (f)", {"e", "f"}),
        ("g / ignoring (kind) group_left (node) h < 14 * 86400", {"g", "h"}),
        ("label_replace(i, 'dst', \"$1\", `src`, '(a b)')", {"i"}),
        ('label_join(j, "dst", "\\" k", "src")', {"j"}),
    ],
)
def test_metric_names_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_dashboard_query_and_variable_is_read() -> None:
    expressions = list(dashboard_expressions(DASHBOARD))
    panels = [p for row in DASHBOARD["panels"] for p in [row, *row.get("panels", [])]]
    targets = sum(len(panel.get("targets", [])) for panel in panels)
    assert len(expressions) == targets + len(DASHBOARD["templating"]["list"])


def test_a_panel_with_an_unknown_metric_is_caught() -> None:
    known = queried_metrics(DASHBOARD)
    bad = with_panel("rate(fedllm_made_up_total[5m]) / fedllm_round_current")
    assert queried_metrics(bad) - known == {"fedllm_made_up_total"}


def test_every_query_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioned["datasources"]
    panels = [p for row in DASHBOARD["panels"] for p in [row, *row.get("panels", [])]]
    targets = [target for panel in panels for target in panel.get("targets", [])]
    used = [item["datasource"] for item in [*panels, *targets] if "datasource" in item]
    rows = [panel for panel in panels if panel["type"] == "row"]
    assert len(used) == len(panels) - len(rows) + len(targets)
    assert all(ds == {"type": source["type"], "uid": source["uid"]} for ds in used)


def test_the_second_wave_has_its_panels() -> None:
    """ε per site, policy refusals, micro-batch and memory adaptations, gateway refusals."""
    panels = {panel["title"]: panel for panel in DASHBOARD["panels"]}
    wanted = {
        "ε spent per site": "fedllm_privacy_epsilon",
        "Policy refusals": "fedllm_policy_refusals_total",
        "Micro-batch size": "fedllm_node_micro_batch",
        "Memory adaptations": "fedllm_node_memory_adaptations_total",
        "Gateway refusals": "fedllm_gateway_refusals_total",
    }
    for title, metric in wanted.items():
        assert title in panels, title
        exprs = [target["expr"] for target in panels[title]["targets"]]
        assert any(metric in metric_names(expr) for expr in exprs), title


def test_epsilon_is_exported_by_a_dp_round() -> None:
    """The one queried metric a plain run never exports (test_telemetry_prometheus.py runs
    without DP): the ServerApp's telemetry exports it for a DP round, under that name."""
    RunTelemetry(7, "fedavg", 2).closed({
        "round": 1, "privacy": {"epsilon": 1.5, "delta": 1e-5},
        "exchanges": {"train": {"nodes": [{"site": "site-a", "dp-epsilon": 2.5}]}},
    })  # fmt: skip
    exported = {metric.name for metric in REGISTRY.collect() for _ in metric.samples}
    assert exported >= ONLY_WITH_DP
    assert queried_metrics(DASHBOARD) >= ONLY_WITH_DP
