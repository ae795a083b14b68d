"""flanjax: FLAN-style instruction fine-tuning of T5 in JAX."""

__version__ = "0.1.0"
