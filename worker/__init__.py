"""Workers: pull runnable jobs from JetStream, run their task, record the outcome, ack."""
