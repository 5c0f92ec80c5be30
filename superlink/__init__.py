"""Server side of fedllm: the ServerApp that aggregates adapters beside the SuperLink."""
