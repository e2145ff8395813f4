"""The log adapter: everything that speaks to NATS JetStream (the event log, consumers,
the topology, the connection, the embedded server, key-value buckets). Library errors are
translated into :mod:`ferrisqueue.errors` here."""
