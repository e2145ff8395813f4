"""An example FerrisQueue plugin: the ``word_count`` job type, and a worker middleware.

``contract`` holds what producers and the gateway need (payload and result models, no
worker code); ``tasks`` holds the handler workers run; ``middleware`` hooks every attempt
(it refuses texts longer than a setting of its own, ``settings``, and journals each attempt
to a per-worker resource, ``journal``). All are declared as entry points in
``pyproject.toml``, which is how FerrisQueue finds them once the package is installed.
"""
