"""FerrisQueue's shared kernel: what every service uses and no service owns.

The kernel holds the event contract (events, subjects, ids), the pure status fold, settings,
the NATS adapter (connection, topology, event log) and the read-store schema. It imports no
service; services import it.
"""

__version__ = "0.1.0"
