"""Everything that leaves the agent: the message schema, reporting (heartbeat,
state_change, results), the outbox (spool), the delivery loops and the sinks, one per
destination kind.

May import model, errors, common, checks, config and schedule; never service or
cli.
"""
