"""The local federation through real SuperLink/SuperNode processes on loopback TLS."""

import csv
import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from fedllm.learning.adapter import load_arrays, load_safetensors
from fedllm.learning.model import build_model, load_base, load_tokenizer, pick_device
from fedllm.settings import RunSettings
from tests.cli import fedllm

pytestmark = pytest.mark.integration


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (our run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != proc.name:
            found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def finished_run(demo_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir, reviews = demo_assets
    run_dir = tmp_path_factory.mktemp("federation") / "run"
    result = fedllm(
        "up", "--nodes", "2", "--rounds", "2", "--model", str(model_dir),
        "--dataset", str(reviews), "--run-dir", str(run_dir),
        "--set", "lr=0.005", "--set", "max-length=64", "--timeout", "240",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fedllm run finished" in result.stdout
    assert f"fedllm predict --run-dir {run_dir} " in result.stdout
    return run_dir


def test_every_round_is_recorded_and_checkpointed(finished_run: Path) -> None:
    history = json.loads((finished_run / "history.json").read_text())
    assert [row["round"] for row in history] == [0, 1, 2]
    for row in history[1:]:
        assert row["nodes-replied"] == 2
        assert 0.0 <= row["centralized"]["accuracy"] <= 1.0
        assert {"f1", "loss"} <= set(row["centralized"])
        assert {"eval-accuracy", "eval-loss", "eval-f1"} <= set(row["federated"])
        assert row["train"]["train-loss"] > 0
        assert row["train"]["tokens-per-second"] > 0
    for server_round in (1, 2):
        checkpoint = finished_run / "checkpoints" / f"round-{server_round}"
        state = json.loads((checkpoint / "state.json").read_text())
        assert state["round"] == server_round
        assert state["config"]["num_server_rounds"] == 2
        assert (checkpoint / "adapter.safetensors").stat().st_size > 0
    assert (finished_run / "history.png").stat().st_size > 0
    assert json.loads((finished_run / "status.json").read_text())["state"] == "finished"


def test_no_process_is_left_running(finished_run: Path) -> None:
    assert processes_mentioning(str(finished_run)) == []


def test_nodes_sign_off_before_the_superlink_stops(finished_run: Path) -> None:
    """Left online, a node would be refused at a restarted SuperLink until its heartbeat lapsed."""
    with sqlite3.connect(finished_run / "state" / "superlink.db") as db:
        statuses = dict(db.execute("SELECT name, status FROM node").fetchall())
    assert statuses == {"node-1": "offline", "node-2": "offline"}


def test_final_adapter_loads_with_peft_and_predicts_like_the_in_memory_model(
    finished_run: Path, demo_assets: tuple[Path, Path]
) -> None:
    run = RunSettings(model=str(demo_assets[0]))
    tokenizer = load_tokenizer(run.model)
    in_memory = build_model(run, tokenizer, pick_device("cpu"))
    load_arrays(
        in_memory, load_safetensors(finished_run / "checkpoints/round-2/adapter.safetensors")
    )
    base = load_base(run.model, int(tokenizer.pad_token_id))
    loaded = PeftModel.from_pretrained(base, finished_run / "final")
    batch = tokenizer(
        ["the film was great and moving", "a dull and tedious plot"],
        padding=True,
        return_tensors="pt",
    )
    in_memory.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.allclose(in_memory(**batch).logits, loaded(**batch).logits, atol=1e-5)


def test_only_the_adapter_travels(finished_run: Path, demo_assets: tuple[Path, Path]) -> None:
    """Bytes Flower's Fleet API received from the nodes, per node and round, vs the model."""
    with sqlite3.connect(finished_run / "state" / "superlink.db") as db:
        (bytes_received,) = db.execute("SELECT bytes_recv FROM run").fetchone()
    run = RunSettings(model=str(demo_assets[0]))
    base = load_base(run.model, 0)
    model_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    per_node_round = bytes_received / (2 * 2)
    assert 0 < per_node_round < 0.05 * model_bytes


def test_predict_uses_the_final_adapter(finished_run: Path) -> None:
    result = fedllm("predict", "--run-dir", str(finished_run), "a great film", "an awful film")
    assert result.returncode == 0, result.stderr
    labels = [line for line in result.stdout.splitlines() if "film" in line]
    assert len(labels) == 2
    assert all(("positive" in line) != ("negative" in line) for line in labels)


def test_predict_scores_a_file_one_record_per_line(finished_run: Path, tmp_path: Path) -> None:
    """U+0085, U+2028 and form feeds stay inside their line; a blank line gets no label."""
    lines = ["a great\x85 film", "", "an awful\u2028 film\x0c too", "a great film\r", "dull"]
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes("\n".join(lines).encode() + b"\n")
    assert int(subprocess.run(["wc", "-l", str(reviews)], capture_output=True, text=True,
                              check=True).stdout.split()[0]) == len(lines)  # fmt: skip
    result = fedllm("predict", "--run-dir", str(finished_run), "--file", str(reviews),
                    "--format", "jsonl")  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["line"] for record in records] == [1, 2, 3, 4, 5]
    assert records[1] == {"line": 2, "label": None, "probability": None}
    for record in records[:1] + records[2:]:
        assert record["label"] in ("positive", "negative") and 0.5 <= record["probability"] <= 1
    table = fedllm("predict", "--run-dir", str(finished_run), "a great film", "dull")
    single = [line for line in table.stdout.splitlines() if "dull" in line]
    assert records[4]["label"] in single[0]  # the same review scores the same either way
    as_csv = fedllm("predict", "--run-dir", str(finished_run), "--file", str(reviews),
                    "--format", "csv")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(int(row["line"]), row["label"] or None) for row in rows] == [
        (record["line"], record["label"]) for record in records
    ]


def test_resume_continues_from_the_last_checkpoint(
    finished_run: Path, demo_assets: tuple[Path, Path]
) -> None:
    model_dir, reviews = demo_assets
    refused = fedllm("up", "--nodes", "2", "--rounds", "3", "--model", str(model_dir),
                     "--dataset", str(reviews), "--run-dir", str(finished_run))  # fmt: skip
    assert refused.returncode != 0
    assert "already holds checkpoints" in refused.stderr
    before = (finished_run / "checkpoints/round-2/adapter.safetensors").read_bytes()
    resumed = fedllm(
        "up", "--nodes", "2", "--rounds", "3", "--model", str(model_dir),
        "--dataset", str(reviews), "--run-dir", str(finished_run), "--resume",
        "--set", "lr=0.005", "--set", "max-length=64", "--timeout", "240",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "exited" not in resumed.stdout  # the nodes rejoin at once
    history = json.loads((finished_run / "history.json").read_text())
    assert [row["round"] for row in history] == [0, 1, 2, 3]
    assert (finished_run / "checkpoints/round-2/adapter.safetensors").read_bytes() == before
    assert (finished_run / "checkpoints/round-3/state.json").is_file()
