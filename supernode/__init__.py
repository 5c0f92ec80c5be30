"""Client side of fedllm: the ClientApp each SuperNode runs on its own data."""
