"""Evaluation per held-out category: seqio metrics, rank classification, FLAN best-template
scoring and a readable report (report.json / report.md / report.png).

`flanjax.eval.rank` and `flanjax.eval.scoring` import no TensorFlow; import submodules directly.
"""
