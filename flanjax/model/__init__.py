"""Flax T5 (v1.0 and v1.1 / FLAN-T5) with logical axis names, HF interop and cached decoding.

Nothing here imports TensorFlow.
"""

from flanjax.model.config import T5Config

__all__ = ["T5Config"]
