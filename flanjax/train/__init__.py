"""Sharded training: optax optimizers, the jitted train step, Orbax checkpoints and the loop.

Nothing here imports TensorFlow or seqio; the launcher passes batches in. Import the modules
(`flanjax.train.loop`, `.step`, `.state`, `.checkpoint`, `.optim`); the run config they take is
`flanjax.config.RunConfig`.
"""
