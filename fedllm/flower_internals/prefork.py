"""ClientApp processes forked from a warm parent: one process per message, minus the imports.

Flower 1.42's SuperExec starts a new `flwr-clientapp` process for every message, and that
process spends seconds importing torch, transformers and peft before the app runs (see the
`startup-seconds` the ClientApp reports). The prefork server imports them once, then forks a
child per message that runs Flower's own `flwr-clientapp` entry point with the arguments,
environment and working directory the SuperExec gave. Each message still gets a fresh
process (Flower's isolation); only the imports are shared, copy-on-write.

The SuperExec finds `flwr-clientapp` on PATH: `fedllm supernode` puts a launcher first on it
that asks the server to fork, or runs Flower's real `flwr-clientapp` when the server is not
(yet) there. The socket lives in a private 0700 directory and only peers with our uid are
served: whoever may connect can start a ClientApp with arguments of their choosing.

The server runs this file as a script (`python -P prefork.py`) and imports nothing of fedllm:
a child must import the app's own packages from the installed FAB, as Flower's process would,
not find copies from the SuperNode's environment already in `sys.modules`.
"""

import argparse
import atexit
import contextlib
import ctypes
import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

# Imported before forking: what every ClientApp needs and takes seconds to load.
PRELOAD = (
    "numpy",
    "torch",
    "transformers",
    "peft",
    "safetensors.torch",
    "psutil",
    "prometheus_client",
    "flwr.supernode.cli.flwr_clientapp",
    "flwr.clientapp",
)
ENTRY = "flwr.supernode.cli.flwr_clientapp:flwr_clientapp"
PR_SET_PDEATHSIG = 1
LAUNCHER = """#!{python} -S
# fedllm: ask the prefork server to fork this ClientApp, else run Flower's own.
import json, os, socket, sys
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect({socket_path!r})
        request = {{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}}
        conn.sendall(json.dumps(request).encode())
        conn.shutdown(socket.SHUT_WR)
        json.loads(conn.recv(4096))["pid"]
except (OSError, ValueError, KeyError, TypeError):
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def write_launcher(directory: Path, socket_path: Path, real: str) -> Path:
    """`directory/flwr-clientapp`, the launcher the SuperExec will find first on PATH."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    launcher = directory / "flwr-clientapp"
    text = LAUNCHER.format(python=sys.executable, socket_path=str(socket_path), real=real)
    launcher.write_text(text)
    launcher.chmod(0o700)
    return launcher


def private_dir() -> Path:
    """A fresh 0700 directory with a short path (unix socket paths stop at 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="fedllm-prefork-"))


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent (the SuperNode role) dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def same_user(conn: socket.socket) -> bool:
    """The peer runs as our uid (SO_PEERCRED: pid, uid, gid)."""
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return uid == os.getuid()


def receive(conn: socket.socket) -> dict[str, Any]:
    """The launcher's request: argv, environment, working directory."""
    chunks = []
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
    request = json.loads(b"".join(chunks))
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list):
        raise ValueError("malformed request")
    return request


def run_child(request: dict[str, Any], entry: str) -> None:
    """In the forked child: become the ClientApp the SuperExec asked for, then exit."""
    code = 1
    try:
        os.chdir(request.get("cwd") or "/")
        os.environ.clear()
        os.environ.update({str(key): str(value) for key, value in request["env"].items()})
        sys.argv = [str(arg) for arg in request["argv"]]
        module, _, name = entry.partition(":")
        getattr(importlib.import_module(module), name)()
        code = 0
    except SystemExit as leaving:
        code = leaving.code if isinstance(leaving.code, int) else int(leaving.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reap() -> None:
    """Collect exited children so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def serve(socket_path: Path, preload: tuple[str, ...] = PRELOAD, entry: str = ENTRY) -> None:
    """Listen first (early launchers queue), import `preload`, then fork one child per request."""
    die_with_parent()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    for module in preload:
        importlib.import_module(module)
    if entry == ENTRY:  # a forked ClientApp asks for its message's objects early
        from fedllm.flower_internals.object_pulls import prompt_clientapp_pulls

        prompt_clientapp_pulls()
    listener.settimeout(1.0)
    while True:
        reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(10.0)
            try:
                if not same_user(conn):
                    continue
                request = receive(conn)
            except (OSError, ValueError):
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                run_child(request, entry)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"pid": pid}).encode())


def start() -> subprocess.Popen[bytes] | None:
    """Start the server beside this SuperNode and put its launcher first on PATH.

    Call before Flower starts its SuperExec, which inherits PATH. `FEDLLM_PREFORK=0` keeps
    Flower's plain `flwr-clientapp`, and so does a host where the server cannot be set up
    (no writable temporary directory, no `flwr-clientapp` to fall back to).
    """
    from fedllm.orchestration.processes import flower_bin

    if os.environ.get("FEDLLM_PREFORK", "1") == "0":
        return None
    real = shutil.which(flower_bin("flwr-clientapp"))
    try:
        if real is None:
            raise OSError("flwr-clientapp not found")
        directory = private_dir()
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        socket_path = directory / "clientapp.sock"
        launcher = write_launcher(directory / "bin", socket_path, real)
        server = subprocess.Popen([sys.executable, "-P", __file__, "--socket", str(socket_path)])
    except OSError as err:
        print(f"fedllm: ClientApps start without prefork: {err}", file=sys.stderr, flush=True)
        return None
    os.environ["PATH"] = f"{launcher.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--preload", default=",".join(PRELOAD))
    parser.add_argument("--entry", default=ENTRY)
    args = parser.parse_args()
    preload = tuple(name for name in args.preload.split(",") if name)
    serve(args.socket, preload, args.entry)


if __name__ == "__main__":
    main()
