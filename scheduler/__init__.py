"""The scheduler: owns time and the jobs nobody else will run.

Three loops of one shape (:class:`ferrisqueue.log.service_loop.ConsumerLoop`) in one process,
any number of instances: the dead-letter router (:mod:`scheduler.dead_letters`: jobs whose
workers kept dying or timing out until JetStream stopped delivering them), the timer relay
(:mod:`scheduler.timers`: delayed jobs and retries with backoff) and the tick relay
(:mod:`scheduler.cron`: periodic jobs). A failure in one never stops the others.
"""
