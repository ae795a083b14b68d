"""Registers the synthetic toy family (`flanjax.data.toy`): tasks `toy_*`, mixtures `toy*`."""

from flanjax.data import toy

MIXTURES = toy.register_toy_tasks()
