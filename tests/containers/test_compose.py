"""`docker compose up` for real: images from a local base, PKI, SuperLink, SuperNodes, run.

Needs Docker and the images `scripts/container-images.sh` builds (`make test-containers`).
One federation serves every test in order: two compose SuperNodes and one remote site
(compose.site.yaml) joining through the published gateway port; `min-nodes=3` makes the run
wait for the site, so all three train in both rounds. The federation runs under Compose v2
(what users run), the site under Debian's Compose v1.29: both must work with these files.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedllm.cli.demo import synthetic_reviews
from fedllm.orchestration.ports import free_port

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"  # Debian's client, the one that matches Debian's daemon
PROJECT = "fedllmci"
SITE_PROJECT = "fedllmsite"
IMAGE = os.environ.get("FEDLLM_IMAGE", "fedllm:0.1.0")
FILES = ["-f", "compose.yaml", "-f", "docker/compose.ci.yaml"]
COMPOSE_V2 = str(Path(sys.executable).parent / "docker-compose")  # scripts/deploy-tools.sh
COMPOSE_V1 = "/usr/bin/docker-compose"  # Debian
ROUNDS = 2


def run(*command: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=1200
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} -> {result.returncode}\n{result.stderr}")
    return result.stdout


def compose(env: dict[str, str], *args: str, check: bool = True) -> str:
    return run(COMPOSE_V2, "-p", PROJECT, *FILES, *args, env=env, check=check)


def site_compose(env: dict[str, str], *args: str) -> str:
    return run(COMPOSE_V1, "-p", SITE_PROJECT, "-f", "compose.site.yaml", *args, env=env)


def volume_file(volume: str, path: str) -> bytes:
    """A file from a named volume, read by a throwaway container."""
    command = [DOCKER, "run", "--rm", "--entrypoint", "cat", "-v", f"{volume}:/v:ro", IMAGE]
    result = subprocess.run([*command, f"/v/{path}"], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def project_containers(project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    return run(DOCKER, "ps", "-aq", "--filter", label).split()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **os.environ,
        "FEDLLM_IMAGE": IMAGE,
        "PROMETHEUS_IMAGE": os.environ.get("PROMETHEUS_IMAGE", "fedllm-prometheus:2.42"),
        "HF_HUB_OFFLINE": "1",
        "FEDLLM_MODEL": "/cache/demo/model",
        "FEDLLM_DATASET": "/cache/demo/reviews.parquet",
        "FEDLLM_NUM_SERVER_ROUNDS": str(ROUNDS),
        "FEDLLM_NUM_PARTITIONS": "2",
        "FEDLLM_MIN_NODES": "3",
        "FEDLLM_MAX_LENGTH": "32",
        "FEDLLM_SUPERLINK_SANS": "DNS:host.docker.internal",
        "FEDLLM_GATEWAY_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
    }


@pytest.fixture(scope="module")
def federation(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`docker-compose up -d` of the whole federation; `down -v` and nothing left after."""
    for binary in (DOCKER, COMPOSE_V1, COMPOSE_V2):
        if not Path(binary).exists():
            pytest.fail(f"{binary} missing: scripts/container-images.sh, scripts/deploy-tools.sh")
    print(run(COMPOSE_V2, "version").strip(), "|", run(COMPOSE_V1, "version", "--short").strip())
    compose(env, "down", "-v", "--remove-orphans", check=False)
    started = time.monotonic()
    try:
        compose(env, "up", "-d")
        print(f"compose up -d returned after {time.monotonic() - started:.0f} s")
        yield env
    finally:
        print(compose(env, "logs", "--no-color", "--tail=40", "submit", check=False))
        site_env = {**env, "FEDLLM_SITE_NAME": "-", "FEDLLM_SUPERLINK": "-"}
        if os.environ.get("FEDLLM_TEST_LOGS"):  # everything else, when debugging a failure
            print(compose(env, "logs", "--no-color", "--tail=60", check=False))
            print(run(COMPOSE_V1, "-p", SITE_PROJECT, "-f", "compose.site.yaml", "logs",
                      "--no-color", "--tail=60", env=site_env, check=False))  # fmt: skip
        run(COMPOSE_V1, "-p", SITE_PROJECT, "-f", "compose.site.yaml", "down", "-v",
            env=site_env, check=False)  # fmt: skip
        compose(env, "down", "-v", "--remove-orphans", check=False)
        print(f"federation up to down: {time.monotonic() - started:.0f} s")
    assert project_containers(PROJECT) == [], "containers left after down -v"
    assert project_containers(SITE_PROJECT) == [], "site containers left after down -v"


def test_the_pki_service_creates_every_certificate(federation: dict[str, str]) -> None:
    for name in ("ca.crt", "ca.crl", "superlink.crt", "operator.crt", "supernode-1.crt"):
        assert volume_file(f"{PROJECT}_certs", name), name
    assert b"BEGIN CERTIFICATE" in volume_file(f"{PROJECT}_certs", "supernode-2.crt")


def onboard(site: str, folder: Path) -> Path:
    """A site's key and CSR made in `folder`, signed by the federation's CA: its certs dir."""
    site_certs = folder / f"{site}-certs"
    # The site makes its key and request; the key never leaves its directory.
    run("bash", "certs/site-request.sh", str(site_certs), site)
    outbox = folder / f"{site}-request"  # what the site sends to the CA: the request alone
    outbox.mkdir()
    shutil.copy(site_certs / f"{site}.csr", outbox / f"{site}.csr")
    (outbox / f"{site}.csr").chmod(0o644)
    sign = ["/app/certs/sign-csr.sh", "/certs", f"/request/{site}.csr", site, "/certs"]
    run(DOCKER, "run", "--rm", "--entrypoint", "bash", "-v", f"{PROJECT}_certs:/certs",
        "-v", f"{outbox}:/request:ro", IMAGE, *sign)  # fmt: skip
    (site_certs / f"{site}.crt").write_bytes(volume_file(f"{PROJECT}_certs", f"{site}.crt"))
    (site_certs / "ca.crt").write_bytes(volume_file(f"{PROJECT}_certs", "ca.crt"))
    for path in (site_certs, *site_certs.iterdir()):
        os.chown(path, 10001, 10001)  # the image's user reads its key
    return site_certs


def test_a_certified_site_whose_key_was_never_registered_cannot_join(
    federation: dict[str, str], tmp_path: Path
) -> None:
    site_certs = onboard("site-b", tmp_path)
    command = [DOCKER, "run", "--rm", "--network", f"{PROJECT}_default",
               "-v", f"{site_certs}:/site:ro", "-e", "HF_HUB_OFFLINE=1", IMAGE, "supernode",
               "--certs", "/site", "--name", "site-b", "--superlink", "superlink:9443"]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    audit = volume_file(f"{PROJECT}_superlink-state", "audit.jsonl").decode().splitlines()
    entries = [json.loads(line) for line in audit if "CN=site-b," in line]
    assert entries and all(entry["status"] == "403" for entry in entries), entries


def test_a_remote_site_joins_with_its_own_key_and_data(
    federation: dict[str, str], tmp_path: Path
) -> None:
    site_certs, site_data = onboard("site-a", tmp_path), tmp_path / "site-data"
    # The operator registers the site's certificate key (the submit service holds operator.crt).
    compose(federation, "run", "--rm", "--no-deps", "submit", "node", "register", "--certs",
            "/certs", "--superlink", "superlink:9443", "/certs/site-a.crt")  # fmt: skip
    site_data.mkdir()
    synthetic_reviews(200, seed=1).to_parquet(site_data / "reviews.parquet", index=False)
    # The site's own cache gets the same tiny base model (seeded) as the federation's.
    run(DOCKER, "run", "--rm", "-v", f"{SITE_PROJECT}_cache:/cache", IMAGE,
        "demo-assets", "/cache/demo")  # fmt: skip
    site_env = {
        **federation,
        "FEDLLM_SITE_NAME": "site-a",
        "FEDLLM_SUPERLINK": f"host.docker.internal:{federation['FEDLLM_GATEWAY_PORT']}",
        "FEDLLM_SITE_CERTS": str(site_certs),
        "FEDLLM_SITE_DATA": str(site_data),
        "FEDLLM_SITE_METRICS_PORT": str(free_port()),
    }
    site_compose(site_env, "up", "-d")
    deadline = time.monotonic() + 300
    while "Starting Flower SuperExec" not in site_compose(site_env, "logs", "--no-color"):
        assert time.monotonic() < deadline, site_compose(site_env, "logs", "--no-color")
        time.sleep(3)


KILL_SUPERLINK = """
import psutil
for proc in psutil.process_iter(["cmdline"]):
    if any(arg.endswith("bin/flower-superlink") for arg in proc.info["cmdline"] or []):
        proc.kill()
"""


def history_rounds() -> list[int]:
    command = [DOCKER, "run", "--rm", "--entrypoint", "cat", "-v", f"{PROJECT}_runs:/v:ro", IMAGE]
    result = subprocess.run([*command, "/v/federation/history.json"], capture_output=True)
    return [row["round"] for row in json.loads(result.stdout or b"[]")]


def test_a_killed_superlink_is_restarted_and_the_job_resumed(federation: dict[str, str]) -> None:
    deadline = time.monotonic() + 600
    while 1 not in history_rounds():
        assert time.monotonic() < deadline, compose(federation, "logs", "--no-color", "submit")
        time.sleep(5)
    container = compose(federation, "ps", "-q", "superlink").strip()
    run(DOCKER, "exec", container, "python3", "-c", KILL_SUPERLINK)
    # `fedllm superlink` exits when its SuperLink dies; the restart policy brings it back.
    deadline = time.monotonic() + 120
    while run(DOCKER, "inspect", "-f", "{{.RestartCount}}", container).strip() == "0":
        assert time.monotonic() < deadline, "the SuperLink container was not restarted"
        time.sleep(2)


def test_the_run_completes_every_round_with_every_node(federation: dict[str, str]) -> None:
    container = compose(federation, "ps", "-a", "-q", "submit").strip()
    status = run(DOCKER, "wait", container).strip()
    logs = compose(federation, "logs", "--no-color", "submit")
    print(logs)
    assert status == "0", logs
    for server_round in range(1, ROUNDS + 1):
        assert f"round {server_round}/{ROUNDS}" in logs
    assert "resubmitting from round 1" in logs
    history = json.loads(volume_file(f"{PROJECT}_runs", "federation/history.json"))
    assert [row["round"] for row in history] == list(range(ROUNDS + 1))
    assert all(row["nodes-replied"] == 3 for row in history[1:]), history
    config = json.loads(volume_file(f"{PROJECT}_runs", "federation/final/adapter_config.json"))
    assert config["peft_type"] == "LORA"
    assert volume_file(f"{PROJECT}_runs", "federation/final/adapter_model.safetensors")


def test_prometheus_scrapes_every_role(federation: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{federation['PROMETHEUS_PORT']}/api/v1/targets"
    deadline = time.monotonic() + 90
    while True:
        targets = httpx.get(url, timeout=10).json()["data"]["activeTargets"]
        health = {target["labels"]["instance"]: target["health"] for target in targets}
        if len(health) == 3 and set(health.values()) == {"up"}:
            break
        assert time.monotonic() < deadline, health
        time.sleep(5)
    print(f"prometheus targets: {health}")
    assert set(health) == {"superlink:9101", "supernode-1:9101", "supernode-2:9101"}


def test_a_container_without_a_valid_certificate_is_refused(
    federation: dict[str, str], tmp_path: Path
) -> None:
    # A certificate from another CA, presented by a container on the federation's network;
    # the same request with a SuperNode's real certificate passes the gateway.
    run(DOCKER, "run", "--rm", "-v", f"{PROJECT}_rogue:/certs", IMAGE, "pki", "/certs", "rogue")
    probe = """
import httpx, ssl, sys
def status(cert, key):
    context = ssl.create_default_context(cafile="/certs/ca.crt")
    context.load_cert_chain(cert, key)
    try:
        return httpx.get("https://superlink:9443/health", verify=context).status_code
    except httpx.HTTPError as err:
        return type(err).__name__
print(status("/certs/supernode-1.crt", "/certs/supernode-1.key"))
print(status("/rogue/rogue.crt", "/rogue/rogue.key"))
"""
    command = [DOCKER, "run", "--rm", "--network", f"{PROJECT}_default", "--entrypoint",
               "python3", "-v", f"{PROJECT}_certs:/certs:ro", "-v", f"{PROJECT}_rogue:/rogue:ro",
               IMAGE, "-c", probe]  # fmt: skip
    try:
        valid, rogue = run(*command).split()
    finally:
        run(DOCKER, "volume", "rm", f"{PROJECT}_rogue")
    print(f"valid certificate: {valid}, certificate of another CA: {rogue}")
    assert valid == "200"
    assert rogue in ("400", "ConnectError", "ReadError", "RemoteProtocolError"), rogue
