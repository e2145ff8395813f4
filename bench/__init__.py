"""FerrisQueue's benchmarks: ``python -m bench`` (``make bench``) and ``python -m bench peers``
(``make bench-peers``). See bench/README.md.

Nothing here is imported by the product; the peers' side (``bench.peers``) runs in its own
virtualenv and imports only the standard library and the peer it measures.
"""
