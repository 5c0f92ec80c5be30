"""Metrics the ServerApp and ClientApps record.

Under PROMETHEUS_MULTIPROC_DIR (set for the SuperLink and SuperNode processes, inherited by
their short-lived app children) every value lands in a per-process file in that directory,
where the role's exporter reads it, also after the child has exited. Gauges keep the most
recent value written by any process (`max` for peaks), so no series carries a pid.
"""

from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

RUN = ["run_id"]
ROUND = ["run_id", "strategy"]
PHASE = ["run_id", "phase"]
# `site`: the name a node was registered under (its certificate CN), or its id when unnamed.
SITE_ROUND = [*ROUND, "site"]
SITE_PHASE = [*PHASE, "site"]
ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


def gauge(
    name: str,
    documentation: str,
    labels: list[str],
    mode: Literal["mostrecent", "max"] = "mostrecent",
) -> Gauge:
    """A gauge that merges across processes by `mode`."""
    return Gauge(name, documentation, labels, multiprocess_mode=mode)


# Rounds and the run, recorded by the ServerApp.
RUN_STATE = gauge("fedllm_run_state", "1 for the run's current state, else 0.", [*RUN, "state"])
LAST_PROGRESS = gauge(
    "fedllm_run_last_progress_timestamp_seconds",
    "Unix time the run last started or completed a round.",
    RUN,
)
ROUND_CURRENT = gauge("fedllm_round_current", "Round in progress (the last once done).", ROUND)
ROUNDS_COMPLETED = Counter("fedllm_rounds_completed", "Rounds completed by the run.", ROUND)
UPDATES_REJECTED = Counter(
    "fedllm_updates_rejected", "Site updates dropped before aggregation (invalid).", SITE_ROUND
)
ROUND_DURATION = Histogram(
    "fedllm_round_duration_seconds",
    "Wall time of a round: training, federated and centralized evaluation.",
    ROUND,
    buckets=ROUND_BUCKETS,
)
NODES_SAMPLED = gauge("fedllm_round_nodes_sampled", "Nodes sent a message, last round.", PHASE)
NODES_REPLIED = gauge("fedllm_round_nodes_replied", "Nodes that replied, last round.", PHASE)
NODES_FAILED = gauge(
    "fedllm_round_nodes_failed", "Nodes that sent an error or no reply, last round.", PHASE
)
POLICY_REFUSALS = Counter(
    "fedllm_policy_refusals",
    "Training messages a site refused (its privacy policy or budget, or egress held back).",
    SITE_ROUND,
)
EPSILON = gauge(
    "fedllm_privacy_epsilon",
    "Privacy spent so far in the run: ε per site (record-level DP-SGD) or of the aggregate"
    ' (site-level, site="all").',
    SITE_ROUND,
)
SITE_REPLIED = gauge(
    "fedllm_round_site_replied", "1 if the site replied (content) last round, else 0.", SITE_PHASE
)
SENT_BYTES = gauge("fedllm_round_sent_bytes", "Record payload sent to nodes, last round.", PHASE)
RECEIVED_BYTES = gauge(
    "fedllm_round_received_bytes", "Record payload received from nodes, last round.", PHASE
)
TRAIN_LOSS = gauge("fedllm_round_train_loss", "Aggregated local training loss.", ROUND)
EVALUATION = [*ROUND, "evaluation"]
ACCURACY = gauge("fedllm_round_accuracy_ratio", "Accuracy of the global model.", EVALUATION)
F1 = gauge("fedllm_round_f1_score", "Macro F1 of the global model.", EVALUATION)
EVAL_LOSS = gauge("fedllm_round_eval_loss", "Evaluation loss of the global model.", EVALUATION)

# Local training, recorded by the ClientApp.
EXAMPLES_PER_SECOND = gauge(
    "fedllm_node_examples_per_second", "Training throughput, last local training.", RUN
)
TOKENS_PER_SECOND = gauge(
    "fedllm_node_tokens_per_second", "Training throughput, last local training.", RUN
)
STEP_SECONDS = gauge(
    "fedllm_node_step_seconds", "Mean optimizer step time, last local training.", RUN
)
NODE_TRAIN_LOSS = gauge("fedllm_node_train_loss", "Local loss, last local training.", RUN)
PARTITION_EXAMPLES = gauge(
    "fedllm_node_partition_examples", "Examples the node holds, per split.", [*RUN, "split"]
)
LAST_ROUND = gauge(
    "fedllm_node_last_trained_round", "Last round the node trained successfully.", RUN
)

# Memory of the app processes, recorded by themselves.
PROCESS = ["process"]
RSS = gauge("fedllm_process_resident_memory_bytes", "Resident memory of the app.", PROCESS)
PEAK_RSS = gauge(
    "fedllm_process_peak_resident_memory_bytes", "Peak resident memory of the apps.", PROCESS, "max"
)
DEVICE = ["process", "device"]
GPU_ALLOCATED = gauge("fedllm_gpu_memory_allocated_bytes", "GPU memory in tensors.", DEVICE)
GPU_RESERVED = gauge(
    "fedllm_gpu_memory_reserved_bytes", "GPU memory held by the caching allocator.", DEVICE
)
GPU_PEAK = gauge(
    "fedllm_gpu_memory_peak_allocated_bytes", "Peak GPU memory in tensors.", DEVICE, "max"
)
GPU_TOTAL = gauge("fedllm_gpu_memory_total_bytes", "Memory of the GPU.", DEVICE)
