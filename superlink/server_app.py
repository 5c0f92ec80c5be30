"""The ServerApp: sends the initial adapter, aggregates, evaluates and checkpoints every round."""

import shutil
import time
from logging import WARNING
from pathlib import Path

from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.exception import PrivacyBudgetExhausted
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedllm.flower_internals.object_pulls import prompt_reply_pulls
from fedllm.identity.audit import append_from_env
from fedllm.learning.adapter import load_arrays, to_arrays
from fedllm.learning.batches import make_loader
from fedllm.learning.evaluate import evaluate
from fedllm.learning.model import build_model, load_tokenizer, pick_device, tokens_read
from fedllm.learning.partition import server_holdout
from fedllm.privacy.dp import check_privacy, site_noise
from fedllm.privacy.secagg import check_secure_aggregation
from fedllm.rundir.checkpoint import (
    STATE_FILE,
    checkpoint_dir,
    completed_rounds,
    guard_fresh,
    load_last_checkpoint,
    prune,
    read_json,
    save_checkpoint,
    write_json,
)
from fedllm.rundir.history import History, write_status
from fedllm.settings import RunSettings, from_flower_config
from fedllm.telemetry.rounds import RunTelemetry
from fedllm.telemetry.sampler import watch_memory
from superlink.plot import plot_history
from superlink.round_grid import RoundGrid
from superlink.site_dp import privacy_entry, restore_accountant
from superlink.strategy import make_strategy

app = ServerApp()


@app.main()
@watch_memory("serverapp")
def main(grid: Grid, context: Context) -> None:
    """Run the configured strategy; record status so watchers learn how the run ended."""
    run = from_flower_config(RunSettings, context.run_config)
    run_dir = Path(run.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    prompt_reply_pulls()  # a reply still arriving is retried after 0.05 s, not 1 s
    telemetry = RunTelemetry(context.run_id, run.strategy, run.num_server_rounds)
    write_status(run_dir, "running", run_id=context.run_id)
    telemetry.state("running")
    append_from_env("run-started", run_id=context.run_id, run_dir=str(run_dir))
    try:
        check_privacy(run)
        check_secure_aggregation(run)
        secure = run if run.secure_aggregation != "none" else None
        federate(RoundGrid(grid, context.run_id, secure=secure), run, run_dir, telemetry)
    except Exception as err:
        error = str(err).splitlines()[0]
        write_status(run_dir, "failed", run_id=context.run_id, error=error)
        telemetry.state("failed")
        append_from_env("run-failed", run_id=context.run_id, reason=error)
        raise
    write_status(run_dir, "finished", run_id=context.run_id)
    telemetry.state("finished")
    append_from_env("run-finished", run_id=context.run_id)


def federate(grid: RoundGrid, run: RunSettings, run_dir: Path, telemetry: RunTelemetry) -> None:
    """Train for the remaining rounds, then save the final adapter."""
    device = pick_device()
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, device)
    holdout = make_loader(
        server_holdout(run), tokenizer, tokens_read(run), run.batch_size, shuffle=False
    )
    done = 0
    initial = to_arrays(model)
    if run.dp in ("server", "client"):
        values = sum(array.numpy().size for array in initial.values())
        log(WARNING, site_noise(run, values))
    if run.resume:
        done, initial = load_last_checkpoint(run_dir)
    else:
        guard_fresh(run_dir)
    write_json(run_dir / "run.json", run.model_dump())
    telemetry.begin(done)
    history = History(run_dir, grid.site)

    def on_train(replies: list[RecordDict], aggregated: MetricRecord) -> None:
        history.on_train(replies, aggregated)
        grid.mark_aggregated("train")  # the strategy aggregates metrics after the arrays

    strategy = make_strategy(run, on_train, history.on_evaluate, history.on_round)
    if done:
        restore_accountant(strategy, read_json(checkpoint_dir(run_dir, done) / STATE_FILE, {}))
    started = time.monotonic()

    def evaluate_and_checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and done > 0:
            return None  # the resumed checkpoint was evaluated when it was written
        load_arrays(model, arrays)
        metrics = evaluate(model, holdout, device)
        entry = {"centralized": metrics, "elapsed-seconds": time.monotonic() - started}
        if exchanges := grid.take():
            entry["exchanges"] = exchanges
        if grid.failed:
            entry["secure-round-failed"], grid.failed = grid.failed, None
        privacy = privacy_entry(strategy) if server_round > 0 else {}
        if "privacy" in privacy:
            entry["privacy"] = privacy["privacy"]
        record = history.close_round(done + server_round, entry)
        telemetry.closed(record)
        if server_round > 0:
            state = {"metrics": record, "config": run.model_dump(), **privacy}
            save_checkpoint(run_dir, done + server_round, arrays, state)
            prune(run_dir, run.keep_checkpoints)
        return MetricRecord(metrics)

    remaining = run.num_server_rounds - done
    arrays = initial
    if remaining > 0:
        try:
            result = strategy.start(
                grid=grid,
                initial_arrays=initial,
                num_rounds=remaining,
                timeout=run.round_timeout,
                evaluate_fn=evaluate_and_checkpoint,
            )
            # Result.arrays stays empty when no round produced an aggregate.
            arrays = result.arrays if len(result.arrays) else initial
        except PrivacyBudgetExhausted as err:  # dp-epsilon reached: the run ends, not fails
            log(WARNING, "stopping before the next round: %s", err)
            rounds = completed_rounds(run_dir)
            arrays = load_last_checkpoint(run_dir)[1] if rounds else initial
    load_arrays(model, arrays)
    save_final(model, tokenizer, run_dir / "final")
    plot_history(history.rounds, run_dir / "history.png")


def save_final(model: PeftModel, tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
    """`save_pretrained` into a fresh directory, swapped in only when complete."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
