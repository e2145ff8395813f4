"""An example FerrisQueue plugin: the ``word_count`` job type.

``contract`` holds what producers and the gateway need (payload and result models, no
worker code); ``tasks`` holds the handler workers run. The two are declared as entry points
in ``pyproject.toml``, which is how FerrisQueue finds them once the package is installed.
"""
