"""The ClientApp: trains and evaluates the global adapter on the node's own data.

Flower 1.42 runs every message in a new `flwr-clientapp` process, so each reply also reports
what that costs: `startup-seconds` (process start to this handler: imports, app install),
`setup-seconds` (settings, model, data from the token cache) beside `train-seconds`.
The site's privacy policy decides first whether it trains at all, and how (DP-SGD, with its
spent (ε, δ) in the reply); the egress guard lets only the update and allowed metrics leave.
"""

import sys
import time

import psutil
from flwr.app import Context, Error, Message, MetricRecord, MetricRecordValues, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedllm.learning.adapter import adapter_state, load_arrays
from fedllm.learning.batches import batches
from fedllm.learning.evaluate import evaluate
from fedllm.learning.updates import encode_update
from fedllm.privacy.dp import REFUSED, SITE_WEIGHT
from fedllm.telemetry.memory import process_memory
from fedllm.telemetry.micro_batches import record_micro_batching
from fedllm.telemetry.sampler import watch_memory
from fedllm.telemetry.training import record_training
from supernode.client_clipping import clip_when_asked
from supernode.dp_sgd import train_private
from supernode.egress_guard import egress_guard
from supernode.label_skew import logit_offset
from supernode.microbatch import plan
from supernode.private_round import Refused, privacy_for
from supernode.secure_aggregation import secure_aggregation
from supernode.site import cache_dir, open_site
from supernode.site_policy import allowed_metrics, load_policy
from supernode.train import train

# Outermost first: the guard sees the reply as it would leave, after clipping (dp=client).
MODS: list[Mod] = [egress_guard, secure_aggregation, clip_when_asked]
app = ClientApp(mods=MODS)


def startup_seconds() -> float:
    """Seconds since this process started."""
    return time.time() - psutil.Process().create_time()


@app.train()
@watch_memory("clientapp")
def train_round(msg: Message, context: Context) -> Message:
    """Train the received adapter locally; reply with the update and training metrics."""
    startup, entered = startup_seconds(), time.monotonic()
    site = open_site(context)
    received = msg.content.array_records["arrays"]
    load_arrays(site.model, received)
    config = msg.content.config_records["config"]
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]
    pad_id = int(site.tokenizer.pad_token_id)
    seed = site.run.seed + server_round
    loader = batches(site.train, pad_id, site.run.batch_size, shuffle=True, seed=seed)
    setup = time.monotonic() - entered
    policy = load_policy(site.node.privacy_policy)
    try:
        private, spent = privacy_for(site, policy, context.run_id, server_round)
    except Refused as err:
        print(f"fedllm: round {server_round}: refused: {err}", file=sys.stderr, flush=True)
        return Message(error=Error(code=REFUSED, reason=str(err)), reply_to=msg)
    adaptation = None
    if private is not None:
        physical = site.run.batch_size
        cache = cache_dir(site.node)
        stats = train_private(site.model, site.train, pad_id, site.device, private, physical, cache)
    else:
        adaptation = plan(site)  # a trial step fits the micro-batch to free memory
        stats = train(
            site.model,
            loader,
            site.device,
            lr=site.run.lr,
            epochs=site.run.local_epochs,
            max_steps=site.run.local_steps,
            proximal_mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
            adaptation=adaptation,
            offset=logit_offset(site.train.labels, site.run.logit_adjustment),
        )
    examples = {"train": len(site.train), "validation": len(site.val)}
    record_training(context.run_id, server_round, stats, examples)
    if adaptation is not None:
        record_micro_batching(context.run_id, adaptation)
    trained = {name: tensor.numpy() for name, tensor in adapter_state(site.model).items()}
    start = {name: array.numpy() for name, array in received.items()}
    name, update = encode_update(trained, start, site.run.update_dtype)
    memory = process_memory()
    metrics: dict[str, MetricRecordValues] = {
        **stats.metrics(),
        "num-examples": len(site.train),
        "startup-seconds": startup,
        "setup-seconds": setup,
        "peak-rss-bytes": memory[1] if memory else 0,
        **(spent.metrics() if spent else {}),
        **({SITE_WEIGHT: 1} if site.run.dp in ("server", "client") else {}),
    }
    reply = RecordDict({name: update, "metrics": MetricRecord(allowed_metrics(policy, metrics))})
    return Message(content=reply, reply_to=msg)


@app.evaluate()
@watch_memory("clientapp")
def evaluate_round(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on the node's validation split."""
    site = open_site(context)
    load_arrays(site.model, msg.content.array_records["arrays"])
    pad_id = int(site.tokenizer.pad_token_id)
    loader = batches(site.val, pad_id, site.run.batch_size, shuffle=False)
    result = evaluate(site.model, loader, site.device)
    metrics = {f"eval-{key}" if key != "num-examples" else key: v for key, v in result.items()}
    if site.run.dp in ("server", "client"):
        metrics[SITE_WEIGHT] = 1  # site-level DP weighs every site the same
    metrics = allowed_metrics(load_policy(site.node.privacy_policy), metrics)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
