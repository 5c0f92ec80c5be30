"""SIGTERM on each role, one at a time, through real processes on loopback mTLS.

Each role (`fedllm supernode`, `fedllm superlink`; `fedllm up` is in test_faults.py) must
exit 0 within STOP_SECONDS, take every process it started with it, and lose nothing that
was already written.
"""

import contextlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fedllm.rundir.history import read_status
from tests.federations import (
    FAULTY_APP,
    announced,
    descendants,
    federation,
    flwr_status,
    programs,
    run_settings,
    stop_role,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.integration

STOP_SECONDS = 15.0


def sigterm_exits_cleanly(process: "subprocess.Popen[bytes]", what: str) -> None:
    """SIGTERM `process`: exit 0 within STOP_SECONDS, nothing it started left running."""
    children = descendants(process.pid)
    returncode, seconds = stop_role(process, STOP_SECONDS)
    assert (returncode, seconds <= STOP_SECONDS) == (0, True), (what, returncode, seconds)
    assert programs(wait_gone(children, STOP_SECONDS - seconds)) == [], what


def test_sigterm_on_a_supernode_mid_round(demo_assets: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fed = federation(run_dir, [{}, {}, {"faults": ",hang"}])  # node-3 busy in round 2
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=2, min_nodes=3, fraction_evaluate=0.0
    )
    with fed:
        run_id = fed.submit(FAULTY_APP, run.to_run_config())
        wait_for(lambda: announced(fed, "node-3", 2, "hang"), 240, "node-3 in round 2")
        sigterm_exits_cleanly(fed.processes["node-3"], "node-3 mid-round")
        wait_for(lambda: read_status(run_dir).get("state") != "running", 120, "the run's end")
        status = flwr_status(fed, run_id)
    assert read_status(run_dir)["state"] == "finished", status
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["round"] for row in history] == [0, 1, 2]
    assert history[1]["nodes-replied"] == 3
    assert (history[2]["nodes-replied"], history[2]["nodes-failed"]) == (2, 1)
    assert (run_dir / "final" / "adapter_config.json").is_file()


def test_sigterm_on_the_superlink_mid_round_then_on_its_supernodes(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    fed = federation(run_dir, [{"faults": ",hang"}, {}])  # node-1 busy in round 2
    run = run_settings(demo_assets, run_dir, num_server_rounds=3, fraction_evaluate=0.0)
    with fed:
        run_id = fed.submit(FAULTY_APP, run.to_run_config())
        wait_for(lambda: announced(fed, "node-1", 2, "hang"), 240, "node-1 in round 2")
        checkpoint = run_dir / "checkpoints" / "round-1" / "adapter.safetensors"
        written = checkpoint.read_bytes()
        superlink = fed.processes["superlink"]
        started = set(programs(descendants(superlink.pid)))
        assert {"flower-superlink", "nginx", "flower-superexec", "flwr-serverapp"} <= started
        sigterm_exits_cleanly(superlink, "superlink mid-round")

        # Nothing written is lost: the checkpoint, and a state database that opens.
        assert checkpoint.read_bytes() == written and load_file(checkpoint)
        with contextlib.closing(sqlite3.connect(run_dir / "state" / "superlink.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # The same state serves again: a SuperLink restarted on it still knows the run.
        fed.restart("superlink")
        assert flwr_status(fed, run_id).split(":")[0] in ("running", "finished")

        # Its SuperNodes, whose run died with it, stop on SIGTERM too: node-1 with the
        # ClientApp it still runs for round 2, which must not outlive it.
        for name in ("node-1", "node-2"):
            sigterm_exits_cleanly(fed.processes[name], f"{name} after the SuperLink restart")
