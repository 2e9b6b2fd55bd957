"""When checks run and what their results mean: the scheduler (one task per check,
a shared timer heap in ``_wakeups``, the concurrency limit in ``_slots``, both
private to it) and the tracker (observation -> up / degraded / down).

May import model, errors, common, checks and config; never outbound, service or
cli.
"""
