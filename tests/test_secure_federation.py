"""Secure aggregation in real federations: what the server receives, and sites that vanish.

Real SuperLink, gateway and SuperNodes on loopback mTLS; the test app's ServerApp is fedllm's
own, keeping every reply it pulls (tests/apps/faulty/capturing_serverapp.py).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from safetensors.numpy import load_file

from fedllm.orchestration.federation import LocalFederation
from fedllm.privacy.secagg import MAX_WEIGHT, quantization_bound
from fedllm.rundir.history import read_status
from fedllm.settings import RunSettings
from tests.federations import (
    FAULTY_APP,
    announced,
    federation,
    flwr_log,
    run_settings,
    wait_for,
)


def received(run_dir: Path) -> list[dict[str, Any]]:
    """What the ServerApp pulled, one entry per reply, with its arrays."""
    folder = run_dir / "received"
    entries = [json.loads(line) for line in (folder / "replies.jsonl").read_text().splitlines()]
    for entry in entries:
        path = folder / f"{entry['index']}.npz"
        entry["values"] = dict(np.load(path)) if path.exists() else {}
    return entries


def run_to_end(fed: LocalFederation, run: RunSettings, timeout: float = 300) -> dict[str, Any]:
    run_dir = Path(run.run_dir)
    fed.submit(FAULTY_APP, run.to_run_config())
    wait_for(lambda: read_status(run_dir).get("state") not in (None, "running"), timeout, "run")
    return read_status(run_dir)


def adapter(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


def test_the_server_sees_masked_updates_and_their_sum_only(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same round, plain then secure, in one federation of 4: the plain ServerApp could
    read each site's update; the secure one received only uniform-looking masked vectors,
    yet ends with the same adapter within the quantization bound."""
    fed = federation(tmp_path / "fed", [{}, {}, {}, {}])
    common = {"num_server_rounds": 1, "min_nodes": 4, "fraction_evaluate": 0.0,
              "update_dtype": "float32"}  # fmt: skip
    plain = run_settings(demo_assets, tmp_path / "plain", **common)
    secure = run_settings(
        demo_assets, tmp_path / "secure", secure_aggregation="secaggplus", **common
    )
    with fed:
        assert run_to_end(fed, plain)["state"] == "finished"
        assert run_to_end(fed, secure)["state"] == "finished"

    clear = [
        e for e in received(tmp_path / "plain") if any(k.startswith("arrays/") for k in e["values"])
    ]
    assert len(clear) == 4  # the plain server held every site's own adapter
    seen = received(tmp_path / "secure")
    assert all(entry["error"] is None for entry in seen)
    arrays = [entry for entry in seen if entry["values"]]
    assert len(arrays) == 4 and all(set(entry["configs"]) == set() for entry in arrays)
    for entry in arrays:
        assert {key.partition("/")[0] for key in entry["values"]} == {"masked"}
        masked = np.concatenate([v.ravel() for v in entry["values"].values()]).astype(np.float64)
        # Uniform on [0, 2^32): mean 2^31, a quarter of the values in each quarter.
        assert abs(masked.mean() / 2**31 - 1) < 0.05
        assert abs(np.mean(masked < 2**30) - 0.25) < 0.05
    key_replies = [entry for entry in seen if not entry["values"]]
    assert {frozenset(keys) for e in key_replies for keys in e["configs"].values()} == {
        frozenset({"pk1", "pk2"}),
        frozenset({"dsts", "ctxts"}),
        frozenset({"nids", "shares"}),
    }

    weights = [e["metrics"]["metrics"]["num-examples"] / MAX_WEIGHT for e in clear]
    bound = quantization_bound(secure.secagg_clip, 4, sum(weights))
    ours, theirs = adapter(tmp_path / "secure"), adapter(tmp_path / "plain")
    assert ours.keys() == theirs.keys()
    moved = max(float(np.abs(theirs[k] - clear[0]["values"][f"arrays/{k}"]).max()) for k in theirs)
    difference = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)
    assert difference <= bound + 1e-6, (difference, bound)
    assert moved > 20 * bound  # the bound is far below what a round changes


def kill(fed: LocalFederation, node: str) -> None:
    """SIGKILL a SuperNode and everything below it."""
    top = psutil.Process(fed.processes[node].pid)
    for proc in [top, *top.children(recursive=True)]:
        proc.kill()


def test_sites_killed_after_sharing_keys(demo_assets: tuple[Path, Path], tmp_path: Path) -> None:
    """Threshold 3 of 4. Round 1: node-4 dies after sharing its keys; the other three unmask
    it and the round completes. Round 2: node-3 dies too; two are left, the round fails in
    one line (log, history, audit) and the run goes on to its end."""
    run_dir = tmp_path / "run"
    fed = federation(run_dir, [{}, {}, {"faults": ",hang"}, {"faults": "hang"}])
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=2, min_nodes=3, fraction_evaluate=0.0,
        secure_aggregation="secaggplus", secagg_threshold=3, secagg_timeout=15.0,
        round_timeout=20.0,
    )  # fmt: skip
    with fed:
        run_id = fed.submit(FAULTY_APP, run.to_run_config())
        wait_for(lambda: announced(fed, "node-4", 1, "hang"), 240, "node-4 in round 1")
        kill(fed, "node-4")
        wait_for(lambda: announced(fed, "node-3", 2, "hang"), 240, "node-3 in round 2")
        kill(fed, "node-3")
        wait_for(lambda: read_status(run_dir).get("state") != "running", 240, "the run's end")
        log = flwr_log(fed, run_id)
    assert read_status(run_dir)["state"] == "finished"
    history = json.loads((run_dir / "history.json").read_text())
    first, second = history[1], history[2]
    assert (first["train"]["secagg-sites"], first["train"]["secagg-dropped"]) == (3, 1)
    assert first["nodes-replied"] == 3 and "secure-round-failed" not in first
    reason = "secure round failed: 2 sites sent a masked update, the threshold is 3"
    assert second["secure-round-failed"] == reason
    assert reason in log
    audit = (run_dir / "state" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in audit if '"secure-round-failed"' in line]
    assert [event["reason"] for event in events] == [reason]
    # The failed round changed nothing: round 2 evaluates round 1's adapter.
    assert second["centralized"] == first["centralized"]
