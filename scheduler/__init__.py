"""The scheduler: owns time and the jobs nobody else will run.

Today it routes dead letters (:mod:`scheduler.dead_letters`): jobs whose workers kept dying
or timing out until JetStream stopped delivering them. Delayed jobs, retries with backoff
and cron (issue 4) will live here too.
"""
