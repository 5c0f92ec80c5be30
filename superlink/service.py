"""`fedllm superlink`: the SuperLink on loopback behind its mTLS gateway, supervised."""

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import psutil

from fedllm.errors import FedllmError
from fedllm.identity import audit
from fedllm.identity.certcheck import check_certificate
from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import descendants_of, flower_bin, flower_env, spawn, stop
from superlink.gateway import nginx_command, render_config
from superlink.node_keys import REGISTRY_CALLS, NodeKeys


def superlink_command(certs: Path, state: Path, port: int) -> list[str]:
    """flower-superlink on loopback only, with its own TLS and state in SQLite."""
    return [
        flower_bin("flower-superlink"),
        "--ssl-certfile", str(certs / "superlink.crt"),
        "--ssl-keyfile", str(certs / "superlink.key"),
        "--ssl-ca-certfile", str(certs / "ca.crt"),
        "--database", str(state / "superlink.db"),
        "--disable-runtime-dependency-installation",
        "--enable-supernode-auth",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


def serve(
    certs: Path,
    state: Path,
    host: str,
    port: int,
    names: tuple[str, ...] = (),
    register_certs: bool = False,
) -> None:
    """Validate certificates, start SuperLink + gateway, supervise until SIGTERM or a crash.

    With `register_certs`, every valid SuperNode certificate in `certs` is registered with
    Flower before the gateway opens. The gateway admits only registered node keys.
    """
    info = check_certificate(
        certs / "superlink.crt", certs / "superlink.key", certs / "ca.crt", "server",
        ("127.0.0.1", "localhost", *names),
    )  # fmt: skip
    print(f"fedllm: server certificate {info.summary()}", file=sys.stderr, flush=True)
    state.mkdir(parents=True, exist_ok=True)
    logs = state / "logs"
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    internal = free_port()
    audit_log = state / audit.AUDIT_FILE
    superlink = spawn(
        superlink_command(certs, state, internal),
        flower_env(state / "home", **{audit.AUDIT_ENV: str(audit_log)}),
        logs / "flower-superlink.log",
    )
    keys = NodeKeys(state, f"127.0.0.1:{internal}", certs / "ca.crt")
    try:
        keys.wait_ready(alive=lambda: superlink.poll() is None)
        if register_certs:
            keys.register_directory(certs)
        keys.refresh()
    except BaseException:
        stop([superlink], grace=5.0)
        raise
    gateway = spawn(
        nginx_command(render_config(state, certs, f"{host}:{port}", internal)),
        flower_env(state / "home"),
        logs / "gateway.log",
    )
    children = {"flower-superlink": superlink, "gateway": gateway}
    # flower-superlink's SuperExec and ServerApp, as last seen: once it dies they are orphans
    # that no longer show as its descendants, and a ServerApp may hang instead of exiting.
    seen: list[psutil.Process] = []
    try:
        supervise(children, certs / "ca.crl", keys, stopping, seen)
    finally:
        # within the 10 s its own supervisor allows
        stop(list(children.values()), grace=5.0, seen=seen)


def supervise(
    children: dict[str, subprocess.Popen[bytes]],
    crl: Path,
    keys: NodeKeys,
    stopping: list[int],
    seen: list[psutil.Process],
) -> None:
    """Wait for a stop signal; reload the gateway on a new CRL or registry; fail if a child dies.

    The gateway's audit lines tell when an operator (un)registered a node. `seen` is kept up
    to date with the children's descendants.
    """
    crl_mtime = crl.stat().st_mtime
    gateway_log, stale = audit.Tail(keys.audit), False
    while not stopping:
        lines = gateway_log.lines()
        stale |= any(call in line for line in lines for call in REGISTRY_CALLS)
        if stale:
            stale = not _apply_registry(keys, children["gateway"])
        seen[:] = descendants_of(list(children.values()))
        for name, child in children.items():
            if child.poll() is not None:
                raise FedllmError(f"{name} exited with status {child.returncode}")
        if crl.stat().st_mtime != crl_mtime:
            crl_mtime = crl.stat().st_mtime
            children["gateway"].send_signal(signal.SIGHUP)
            print(f"fedllm: CRL {crl} changed, gateway reloaded", file=sys.stderr, flush=True)
        time.sleep(1.0)


def _apply_registry(keys: NodeKeys, gateway: subprocess.Popen[bytes]) -> bool:
    """Rewrite the gateway's key map from Flower's registry and reload it; False to retry."""
    try:
        if keys.refresh():
            gateway.send_signal(signal.SIGHUP)
            print("fedllm: node registry changed, gateway reloaded", file=sys.stderr, flush=True)
    except FedllmError as err:
        print(f"fedllm: gateway key map not refreshed, retrying: {err}", file=sys.stderr)
        return False
    return True
