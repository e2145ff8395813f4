"""The read store: SQLModel tables the projector writes and the gateway and dashboard read."""
