"""The `fedllm` command line: run a local federation, use its result, make demo assets."""

import logging
import os
import signal
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

from fedllm.cli.node import app as node_app
from fedllm.errors import FedllmError, Stopped, Terminated, raise_terminated
from fedllm.privacy.dp import check_privacy
from fedllm.privacy.secagg import check_secure_aggregation
from fedllm.settings import RunSettings, build

app = typer.Typer(
    help="Federated LoRA fine-tuning with Flower.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(node_app, name="node")
console = Console()


class OutputFormat(StrEnum):
    """How `fedllm predict` prints its results."""

    table = "table"
    jsonl = "jsonl"
    csv = "csv"


MetricsPort = Annotated[int, typer.Option(help="Prometheus exporter port (0: no exporter).")]
MetricsHost = Annotated[str, typer.Option(help="Address the Prometheus exporter listens on.")]
MetricsDir = Annotated[
    Path | None,
    typer.Option(envvar="PROMETHEUS_MULTIPROC_DIR", help="Where the apps write metrics."),
]


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs (run-config names, dashes or underscores) to settings fields."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise FedllmError(f"--set expects KEY=VALUE, got {pair!r}")
        field = key.strip().replace("-", "_")
        if field not in RunSettings.model_fields:
            raise FedllmError(f"unknown setting {key!r} in --set")
        values[field] = value
    return values


def run_settings(given: dict[str, Any], sets: list[str], run_dir: Path) -> RunSettings:
    """Settings from env/.env, then the flags that were given, then `--set` pairs."""
    values = {key: value for key, value in given.items() if value is not None}
    values |= parse_sets(sets)
    values["run_dir"] = str(run_dir.resolve())
    run = build(RunSettings, **values)
    check_privacy(run)
    check_secure_aggregation(run)
    return run


@app.command("up")
def up_command(
    nodes: Annotated[int, typer.Option(min=1, help="SuperNodes to start.")] = 3,
    rounds: Annotated[int | None, typer.Option(min=1, help="Federated rounds.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id or local model directory.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Hub id or local parquet/csv/jsonl with text,label.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<time>).")
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Aggregation strategy.")] = None,
    certs: Annotated[Path | None, typer.Option(help="Existing PKI directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    threads: Annotated[int, typer.Option(min=0, help="Torch threads per node (0 = share).")] = 0,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 86400.0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any run setting, KEY=VALUE (repeatable).")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(min=0, help="SuperLink exporter port, node k gets +k (0: free ports).")
    ] = 0,
    prometheus: Annotated[
        bool, typer.Option(help="Run Debian's prometheus scraping every role.")
    ] = False,
    prometheus_port: Annotated[int, typer.Option(help="Port of that Prometheus.")] = 9090,
) -> None:
    """Start a SuperLink and NODES SuperNodes on loopback TLS, run, and stop them all."""
    from fedllm.orchestration.up import stopped_run, up

    signal.signal(signal.SIGTERM, raise_terminated)
    given = {"num_server_rounds": rounds, "model": model, "dataset": dataset,
             "strategy": strategy, "resume": resume or None}  # fmt: skip
    default_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run = run_settings(given, set_ or [], run_dir or default_dir)
    check_secure_aggregation(run, nodes)
    try:
        up(
            run, nodes, certs.resolve() if certs else None, threads, timeout, console,
            metrics_port=metrics_port, prometheus_port=prometheus_port if prometheus else None,
        )  # fmt: skip
    except (KeyboardInterrupt, Terminated) as stop:  # the federation is down by now
        raise stopped_run(run, sys.argv[1:], isinstance(stop, KeyboardInterrupt)) from None


@app.command("submit")
def submit_command(
    certs: Annotated[Path, typer.Option(help="Directory with ca.crt, operator.crt/.key.")],
    superlink: Annotated[str, typer.Option(help="SuperLink gateway HOST:PORT.")],
    run_dir: Annotated[Path, typer.Option(help="Run directory the SuperLink writes to.")],
    rounds: Annotated[int | None, typer.Option(min=1, help="Federated rounds.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id or model directory.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Hub id or data file.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Aggregation strategy.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the run directory's last checkpoint, if any.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 86400.0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any run setting, KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Submit a run to a SuperLink, follow it, and resubmit it if the SuperLink restarts."""
    from fedllm.identity.certcheck import check_certificate
    from fedllm.identity.operator import Operator
    from fedllm.orchestration.submit import run_remote_job
    from fedllm.orchestration.summary import print_summary
    from fedllm.orchestration.up import APP_DIR

    signal.signal(signal.SIGTERM, raise_terminated)
    given = {"num_server_rounds": rounds, "model": model, "dataset": dataset,
             "strategy": strategy, "resume": resume or None}  # fmt: skip
    run = run_settings(given, set_ or [], run_dir)
    check_certificate(certs / "operator.crt", certs / "operator.key", certs / "ca.crt", "client")
    home = Path(tempfile.mkdtemp(prefix="fedllm-operator-"))
    operator = Operator(superlink, certs.resolve(), home)
    started = time.monotonic()
    run_id, history = run_remote_job(operator, run, APP_DIR, console, timeout)
    print_summary(run, run_id, history, time.monotonic() - started, console)


@app.command("pki")
def pki_command(
    target: Annotated[Path, typer.Argument(help="PKI directory (created if empty).")],
    nodes: Annotated[list[str], typer.Argument(help="SuperNode names that need a certificate.")],
) -> None:
    """Create the federation's PKI, or issue certificates for nodes that have none yet."""
    from fedllm.identity.pki import ensure

    for line in ensure(target, nodes):
        console.print(line)


@app.command("superlink")
def superlink_command(
    certs: Annotated[Path, typer.Option(help="PKI directory: ca.crt, ca.crl, superlink.*")],
    port: Annotated[int, typer.Option(help="Port remote SuperNodes and the operator dial.")] = 9443,
    host: Annotated[str, typer.Option(help="Address the gateway listens on.")] = "0.0.0.0",
    state: Annotated[Path, typer.Option(help="State directory (SQLite, logs).")] = Path("state"),
    name: Annotated[
        list[str] | None, typer.Option(help="Names the server certificate must carry.")
    ] = None,
    register_certs: Annotated[
        bool, typer.Option(help="Register every valid SuperNode certificate in --certs at start.")
    ] = False,
    metrics_port: MetricsPort = 0,
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_dir: MetricsDir = None,
) -> None:
    """The SuperLink on loopback behind its mutual-TLS gateway on HOST:PORT."""
    from fedllm.identity.audit import AUDIT_FILE
    from fedllm.telemetry.exporter import start_exporter
    from fedllm.telemetry.gateway import GatewayRefusals
    from superlink.service import serve

    certificates = [certs / "superlink.crt", certs / "ca.crt"]
    refusals = GatewayRefusals(state.resolve() / AUDIT_FILE)
    start_exporter(
        "superlink", "superlink", metrics_host, metrics_port, metrics_dir, certificates,
        collectors=[refusals],
    )  # fmt: skip
    serve(certs.resolve(), state.resolve(), host, port, tuple(name or ()), register_certs)


@app.command("supernode")
def supernode_command(
    certs: Annotated[Path, typer.Option(help="Directory with ca.crt, NAME.crt, NAME.key.")],
    name: Annotated[str, typer.Option(help="This node's certificate name.")],
    superlink: Annotated[str, typer.Option(help="SuperLink gateway HOST:PORT.")],
    node_config: Annotated[
        str, typer.Option(help="Flower node config, e.g. 'partition-id=0 num-partitions=3'.")
    ] = "",
    runtime_port: Annotated[int, typer.Option(help="Local port for the ClientApp API.")] = 9094,
    metrics_port: MetricsPort = 0,
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_dir: MetricsDir = None,
) -> None:
    """A SuperNode that joins over mutual TLS with this site's certificate."""
    from fedllm.telemetry.exporter import start_exporter
    from supernode.service import serve

    certificates = [certs / f"{name}.crt", certs / "ca.crt"]
    start_exporter("supernode", name, metrics_host, metrics_port, metrics_dir, certificates)
    serve(certs.resolve(), name, superlink, node_config, runtime_port)


@app.command("flwr", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flwr_command(
    ctx: typer.Context,
    certs: Annotated[Path, typer.Option(help="Directory with ca.crt, operator.crt/.key.")],
) -> None:
    """Flower's `flwr` CLI (run, ls, stop, supernode ...) presenting the operator certificate."""
    from fedllm.flower_internals.mtls import present_client_certificate
    from fedllm.identity.certcheck import check_certificate

    cert, key = certs / "operator.crt", certs / "operator.key"
    check_certificate(cert, key, certs / "ca.crt", "client")
    present_client_certificate(cert, key)
    from flwr.cli.app import app as flwr_app

    flwr_app(args=list(ctx.args), prog_name="flwr")


@app.command("audit")
def audit_command(
    state: Annotated[Path, typer.Option(help="The SuperLink's state directory.")] = Path("state"),
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this ISO time (UTC if no zone).")
    ] = None,
    node: Annotated[str | None, typer.Option(help="Only entries about this site (its CN).")] = None,
) -> None:
    """Print the SuperLink's audit log (state/audit.jsonl) as a table."""
    import datetime as dt

    from fedllm.cli.audit import selected, table
    from fedllm.identity.audit import AUDIT_FILE, read

    path = state / AUDIT_FILE
    if not path.is_file():
        raise FedllmError(f"{path}: file not found (is --state the SuperLink's state directory?)")
    start = None
    if since is not None:
        try:
            start = dt.datetime.fromisoformat(since)
        except ValueError:
            message = f"--since expects an ISO time like 2026-12-01T09:00, got {since!r}"
            raise FedllmError(message) from None
        start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
    console.print(table([entry for entry in read(path) if selected(entry, start, node)]))


@app.command("predict")
def predict_command(
    texts: Annotated[list[str] | None, typer.Argument(help="Reviews to classify.")] = None,
    run_dir: Annotated[Path, typer.Option(help="Run directory with final/.")] = Path("runs"),
    file: Annotated[Path | None, typer.Option(help="File with one review per line.")] = None,
    format_: Annotated[
        OutputFormat, typer.Option("--format", help="table, or one record per review.")
    ] = OutputFormat.table,
) -> None:
    """Print the label and its probability for each review (blank lines: no label)."""
    from fedllm.learning.predict import predict, read_reviews
    from fedllm.learning.predictions import write_predictions

    if texts and file is not None:
        raise FedllmError("give reviews as arguments or with --file, not both")
    reviews = read_reviews(file) if file is not None else list(texts or [])
    if not reviews:
        raise FedllmError("give reviews as arguments or with --file")
    write_predictions(reviews, predict(run_dir, reviews), format_.value, console)


@app.command("demo-assets")
def demo_assets_command(
    target: Annotated[Path, typer.Argument(help="Directory to write into.")],
    reviews: Annotated[int, typer.Option(min=8, help="Synthetic reviews to write.")] = 4000,
) -> None:
    """Write a tiny GPT-2 (model/) and synthetic reviews (reviews.parquet) for offline runs."""
    from fedllm.cli.demo import write_demo_assets

    model_dir, data_file = write_demo_assets(target, reviews)
    console.print(f"model: {model_dir}\ndataset: {data_file}")


@app.command("config-reference")
def config_reference_command() -> None:
    """Print every setting (key, environment variable, type, default, limits) as Markdown."""
    from fedllm.cli.config import reference

    print(reference())


def quiet_libraries() -> None:
    """Keep hub retry chatter and load reports off the terminal; errors still surface."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    hub_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    # bitsandbytes warns on CPU hosts about optional kernels it would fetch from the hub.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1 or 2."""
    from fedllm.orchestration.processes import QUIET_FLOWER

    os.environ.update(QUIET_FLOWER)
    # Flower starts its helpers (flower-superexec, flwr-clientapp) by name: find ours first.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except FedllmError as err:
        print(f"fedllm: error: {err}", file=sys.stderr)
        sys.exit(1)
    except Stopped as stop:
        print(f"fedllm: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except Terminated:
        print("fedllm: stopped by SIGTERM; every started process was stopped", file=sys.stderr)
        sys.exit(0)
    except click.exceptions.Abort:
        print("fedllm: aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as err:
        print(f"fedllm: error: {err.format_message()}", file=sys.stderr)
        sys.exit(2)
    if isinstance(code, int) and code:  # typer returns 130 for a Ctrl-C outside `up`
        print("fedllm: interrupted", file=sys.stderr)
        sys.exit(code)
