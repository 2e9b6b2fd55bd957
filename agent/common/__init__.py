"""Building blocks every stage may use: strict tables, key files, atomic files,
durations, RFC 3339 times, Retry-After, backoff, logs, signing.

Modules here import only the standard library, ``agent.model``, ``agent.errors``
and each other; never a stage folder (config, checks, schedule, outbound, service,
cli, central).
"""
