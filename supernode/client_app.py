"""The ClientApp: trains and evaluates the global adapter on the node's own data."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedllm.adapter import load_arrays, to_arrays
from fedllm.batches import make_loader
from fedllm.evaluate import evaluate
from fedllm.telemetry.sampler import watch_memory
from fedllm.telemetry.training import record_training
from supernode.site import open_site
from supernode.train import train

app = ClientApp()


@app.train()
@watch_memory("clientapp")
def train_round(msg: Message, context: Context) -> Message:
    """Train the received adapter locally; reply with the adapter and training metrics."""
    site = open_site(context)
    load_arrays(site.model, msg.content.array_records["arrays"])
    config = msg.content.config_records["config"]
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]
    loader = make_loader(
        site.train,
        site.tokenizer,
        site.run.max_length,
        site.run.batch_size,
        shuffle=True,
        seed=site.run.seed + server_round,
    )
    stats = train(
        site.model,
        loader,
        site.device,
        lr=site.run.lr,
        epochs=site.run.local_epochs,
        max_steps=site.run.local_steps,
        proximal_mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
    )
    examples = {"train": len(site.train), "validation": len(site.val)}
    record_training(context.run_id, server_round, stats, examples)
    metrics = {**stats.metrics(), "num-examples": len(site.train)}
    reply = RecordDict({"arrays": to_arrays(site.model), "metrics": MetricRecord(metrics)})
    return Message(content=reply, reply_to=msg)


@app.evaluate()
@watch_memory("clientapp")
def evaluate_round(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on the node's validation split."""
    site = open_site(context)
    load_arrays(site.model, msg.content.array_records["arrays"])
    loader = make_loader(
        site.val, site.tokenizer, site.run.max_length, site.run.batch_size, shuffle=False
    )
    result = evaluate(site.model, loader, site.device)
    metrics = {f"eval-{key}" if key != "num-examples" else key: v for key, v in result.items()}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
