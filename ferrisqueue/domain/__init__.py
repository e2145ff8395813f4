"""The pure domain: events, the status fold, commands, subjects, policies and
schedules. No I/O, no clock, no network: everything here is a function of its inputs, and
it imports nothing of the log adapter, the store or the CLI."""
