"""The peers ``make bench-peers`` runs the processing workload on, one module per library.

These modules run in their own virtualenv (``bench/.venv-peers``, from ``requirements.txt``)
and import only the standard library and the library they measure: never FerrisQueue.
``bench.peers.runner`` (in the product's venv) drives them and takes the medians.
"""
