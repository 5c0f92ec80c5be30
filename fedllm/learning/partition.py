"""A node's share of the data, via flwr-datasets partitioners (IID or Dirichlet label skew)."""

from datasets import Dataset
from flwr_datasets import FederatedDataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from fedllm.errors import FedllmError
from fedllm.learning.data import hub_hint, is_local, read_table, split_holdout
from fedllm.settings import NodeSettings, RunSettings


def make_partitioner(run: RunSettings, num_partitions: int) -> Partitioner:
    """The configured partitioner over `num_partitions` nodes."""
    if run.partitioner == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=run.dirichlet_alpha,
            min_partition_size=2,
            self_balancing=False,
            seed=run.seed,
        )
    return IidPartitioner(num_partitions=num_partitions)


def node_data(run: RunSettings, node: NodeSettings) -> Dataset:
    """This node's examples: its own file, or its partition of the federation's dataset."""
    if node.data_path is not None:
        return read_table(node.data_path)
    if node.partition_id >= node.num_partitions:
        raise FedllmError(
            f"invalid setting 'partition-id': {node.partition_id} is not below "
            f"num-partitions {node.num_partitions}"
        )
    partitioner = make_partitioner(run, node.num_partitions)
    if is_local(run.dataset):
        pool, _ = split_holdout(read_table(run.dataset), run.eval_fraction, run.seed)
        partitioner.dataset = pool
        return partitioner.load_partition(node.partition_id)
    try:
        fds = FederatedDataset(dataset=run.dataset, partitioners={"train": partitioner})
        return fds.load_partition(node.partition_id, "train")
    except Exception as err:  # the hub client raises many types when offline
        raise FedllmError(hub_hint(f"dataset {run.dataset!r}", "--dataset", err)) from None


def server_holdout(run: RunSettings) -> Dataset:
    """Reviews no node trains on, for the server's centralized evaluation."""
    if is_local(run.dataset):
        _, held_out = split_holdout(read_table(run.dataset), run.eval_fraction, run.seed)
    else:
        from fedllm.learning.data import load_hub_split

        held_out = load_hub_split(run.dataset, "test")
    if len(held_out) > run.eval_max:
        held_out = held_out.shuffle(seed=run.seed).select(range(run.eval_max))
    return held_out
