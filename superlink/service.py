"""`fedllm superlink`: the SuperLink on loopback behind its mTLS gateway, supervised."""

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import psutil

from fedllm.certcheck import check_certificate
from fedllm.errors import FedllmError
from fedllm.processes import descendants_of, flower_bin, flower_env, free_port, spawn, stop
from superlink.gateway import nginx_command, render_config


def superlink_command(certs: Path, state: Path, port: int) -> list[str]:
    """flower-superlink on loopback only, with its own TLS and state in SQLite."""
    return [
        flower_bin("flower-superlink"),
        "--ssl-certfile", str(certs / "superlink.crt"),
        "--ssl-keyfile", str(certs / "superlink.key"),
        "--ssl-ca-certfile", str(certs / "ca.crt"),
        "--database", str(state / "superlink.db"),
        "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


def serve(certs: Path, state: Path, host: str, port: int, names: tuple[str, ...] = ()) -> None:
    """Validate certificates, start SuperLink + gateway, supervise until SIGTERM or a crash."""
    info = check_certificate(
        certs / "superlink.crt", certs / "superlink.key", certs / "ca.crt", "server",
        ("127.0.0.1", "localhost", *names),
    )  # fmt: skip
    print(f"fedllm: server certificate {info.summary()}", file=sys.stderr, flush=True)
    state.mkdir(parents=True, exist_ok=True)
    logs = state / "logs"
    internal = free_port()
    superlink = spawn(
        superlink_command(certs, state, internal),
        flower_env(state / "home"),
        logs / "flower-superlink.log",
    )
    gateway = spawn(
        nginx_command(render_config(state, certs, f"{host}:{port}", internal)),
        flower_env(state / "home"),
        logs / "gateway.log",
    )
    children = {"flower-superlink": superlink, "gateway": gateway}
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # flower-superlink's SuperExec and ServerApp, as last seen: once it dies they are orphans
    # that no longer show as its descendants, and a ServerApp may hang instead of exiting.
    seen: list[psutil.Process] = []
    try:
        supervise(children, certs / "ca.crl", stopping, seen)
    finally:
        # within the 10 s its own supervisor allows
        stop(list(children.values()), grace=5.0, seen=seen)


def supervise(
    children: dict[str, subprocess.Popen[bytes]],
    crl: Path,
    stopping: list[int],
    seen: list[psutil.Process],
) -> None:
    """Wait for a stop signal; reload the gateway when the CRL changes; fail if a child dies.

    `seen` is kept up to date with the children's descendants.
    """
    crl_mtime = crl.stat().st_mtime
    while not stopping:
        seen[:] = descendants_of(list(children.values()))
        for name, child in children.items():
            if child.poll() is not None:
                raise FedllmError(f"{name} exited with status {child.returncode}")
        if crl.stat().st_mtime != crl_mtime:
            crl_mtime = crl.stat().st_mtime
            children["gateway"].send_signal(signal.SIGHUP)
            print(f"fedllm: CRL {crl} changed, gateway reloaded", file=sys.stderr, flush=True)
        time.sleep(1.0)
