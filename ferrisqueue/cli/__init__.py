"""The ``fq`` command."""
