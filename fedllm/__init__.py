"""fedllm: federated LoRA fine-tuning of language models with Flower."""

__version__ = "0.1.0"
