"""A site's whole life through real processes: CSR, registration, training, revocation.

`hospital-c` is onboarded as a site would be (its key made at the site, the CA signing its
CSR), registered from its certificate with `fedllm node register` while the federation runs,
and trains round 1 beside node-1 and node-2. In round 2 its ClientApp holds on to its reply
(the test app's `hang`); meanwhile the CA revokes its certificate and the operator
unregisters it. Its next request is refused, Flower gives up on its reply at once, and the
other two nodes finish the run. The history, the ServerApp's metrics and the audit log name
it by its certificate's CN.
"""

import json
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from flwr.proto.fleet_pb2 import PullMessagesRequest  # pylint: disable=E0611
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611

from fedllm.identity.audit import read
from fedllm.orchestration.federation import LocalFederation
from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import flower_env, spawn, stop
from fedllm.rundir.history import read_history, read_status
from tests.federations import FAULT, FAULTY_APP, federation, run_settings, wait_for
from tests.fleet import signed_post
from tests.pki import CERTS, sh

pytestmark = pytest.mark.integration
SITE = "hospital-c"


def fedllm_node(fed: LocalFederation, *args: str | Path) -> str:
    """`fedllm node ARGS` as the federation's operator; its output."""
    command = [sys.executable, "-m", "fedllm", "node", *map(str, args),
               "--certs", str(fed.certs), "--superlink", fed.address]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def onboard(ca_dir: Path, site_dir: Path) -> Path:
    """The site makes its key and CSR, the CA signs it; the signed certificate (CA side)."""
    assert sh(CERTS / "site-request.sh", site_dir, SITE).returncode == 0
    outbox = ca_dir.parent / "outbox"
    signed = sh(CERTS / "sign-csr.sh", ca_dir, site_dir / f"{SITE}.csr", SITE, outbox)
    assert signed.returncode == 0, signed.stderr
    shutil.copy(outbox / f"{SITE}.crt", site_dir)  # returned to the site, with the CA's
    shutil.copy(ca_dir / "ca.crt", site_dir)
    return outbox / f"{SITE}.crt"


def health(fed: LocalFederation, site_dir: Path) -> int:
    """Status of GET /health presenting the site's certificate (400 once it is revoked)."""
    context = ssl.create_default_context(cafile=str(site_dir / "ca.crt"))
    context.load_cert_chain(site_dir / f"{SITE}.crt", site_dir / f"{SITE}.key")
    return httpx.get(f"https://{fed.address}/health", verify=context).status_code


def fleet_calls(fed: LocalFederation) -> list[dict[str, str]]:
    """Gateway audit entries of Fleet API requests made with the site's certificate."""
    entries = read(fed.state / "audit.jsonl")
    return [e for e in entries if e.get("subject", "").startswith(f"CN={SITE},")
            and e["uri"].startswith("/v1/fleet/")]  # fmt: skip


def site_replied(metrics: str, phase: str) -> dict[str, float]:
    """`fedllm_round_site_replied` per site for `phase`, from the exporter's text."""
    series = re.findall(r"fedllm_round_site_replied\{([^}]*)\} (\S+)", metrics)
    labels = [(dict(re.findall(r'(\w+)="([^"]*)"', found)), value) for found, value in series]
    return {found["site"]: float(value) for found, value in labels if found["phase"] == phase}


def joined(fed: LocalFederation) -> set[str]:
    """CNs of the certificates whose node was activated (it went online)."""
    entries = read(fed.state / "audit.jsonl")
    return {e["subject"].split(",")[0].removeprefix("CN=") for e in entries
            if e.get("uri") == "/v1/fleet/activate-node" and e["status"] == "200"}  # fmt: skip


def hung_in_round_2(log: Path) -> bool:
    return any(rnd == "2" for _, rnd, _ in FAULT.findall(log.read_text(errors="replace")))


def test_an_onboarded_site_trains_then_is_revoked_and_the_others_finish(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    fed = federation(run_dir, [{"num-partitions": 3}, {"num-partitions": 3}])
    site_dir = fed.state / "site"
    # A reply Flower did not give up on at once would hold round 2 past the waits below.
    run = run_settings(demo_assets, run_dir, num_server_rounds=3, min_nodes=2,
                       fraction_evaluate=0.0, round_timeout=3600.0)  # fmt: skip
    with fed:
        crt = onboard(fed.certs, site_dir)
        node_id = int(fedllm_node(fed, "register", crt).split()[-1])
        pull = PullMessagesRequest(node=Node(node_id=node_id))
        wait_for(
            lambda: signed_post(fed.address, site_dir / "ca.crt", site_dir / f"{SITE}.crt",
                                site_dir / f"{SITE}.key", "pull-messages", pull)[0] != 403,
            30,
            "the gateway to bind the site's key",
        )  # fmt: skip
        config = {"partition-id": 2, "num-partitions": 3, "threads": 1, "faults": ",hang"}
        log = fed.state / "logs" / f"{SITE}.log"
        command = [
            sys.executable, "-m", "fedllm", "supernode", "--certs", str(site_dir), "--name", SITE,
            "--superlink", fed.address, "--runtime-port", str(free_port()),
            "--node-config", " ".join(f"{k}={json.dumps(v)}" for k, v in config.items()),
        ]  # fmt: skip
        site = spawn(command, flower_env(fed.state / "home" / SITE), log)
        try:
            everyone = {"node-1", "node-2", SITE}
            wait_for(lambda: everyone <= joined(fed), 120, "three nodes online")
            fed.submit(FAULTY_APP, run.to_run_config())
            wait_for(lambda: hung_in_round_2(log), 240, f"{SITE} to hold its round-2 reply")
            seen = len(fleet_calls(fed))
            revoked = sh(CERTS / "revoke.sh", fed.certs, crt, "keyCompromise")
            assert revoked.returncode == 0, revoked.stderr
            assert f"node {node_id} unregistered" in fedllm_node(fed, "unregister", crt)
            wait_for(
                lambda: any(int(e["status"]) >= 400 for e in fleet_calls(fed)[seen:]),
                60,
                f"a request of {SITE} refused",
            )
            wait_for(lambda: health(fed, site_dir) == 400, 30, "the gateway to load the CRL")
            wait_for(lambda: read_status(run_dir).get("state") != "running", 240, "the run's end")
            metrics = httpx.get(f"http://127.0.0.1:{fed.metrics_ports['superlink']}/metrics").text
        finally:
            stop([site])

    assert read_status(run_dir)["state"] == "finished"
    history = read_history(run_dir)
    assert [row["round"] for row in history] == [0, 1, 2, 3]
    replied = [
        {node["site"] for node in row["exchanges"]["train"]["nodes"] if "received-bytes" in node}
        for row in history[1:]
    ]
    assert replied == [{"node-1", "node-2", SITE}, {"node-1", "node-2"}, {"node-1", "node-2"}]
    assert [row["nodes-failed"] for row in history[1:]] == [0, 1, 0]  # round 3: not sampled
    assert {n["node"] for n in history[1]["exchanges"]["train"]["nodes"] if n["site"] == SITE} == {
        node_id
    }
    assert site_replied(metrics, "train") == {"node-1": 1.0, "node-2": 1.0, SITE: 0.0}
    events = [(e.get("event"), e.get("node")) for e in read(fed.state / "audit.jsonl")]
    assert ("node-key-bound", SITE) in events and ("node-key-unbound", SITE) in events
