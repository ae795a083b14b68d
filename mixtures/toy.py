"""Registers the synthetic toy family (`flanjax.data.toy`): tasks `toy_*`, mixtures `toy*`."""

from flanjax.data import registry, toy

registry.register_flan_tasks(toy.TOY_TASKS)
MIXTURES = registry.register_flan_mixtures("toy", [spec.name for spec in toy.TOY_TASKS], cap=None)
