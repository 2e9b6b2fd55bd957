"""When checks run and what their results mean: the scheduler (one task per check,
a shared timer heap in wakeups, the concurrency limit in slots) and the tracker
(observation -> up / degraded / down).

May import model, errors, common, checks and config; never outbound, service or
cli.
"""
