"""Projections: fold the event log into the read store, exactly once."""
