"""The files the labeling app reads and writes: JSON lines, export tables, digests.

Django-free (pyarrow and datasets only when a format needs them), so training reads exports
with the same code that wrote them.
"""
