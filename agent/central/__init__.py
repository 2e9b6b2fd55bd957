"""The reference central receiver: verifies, remembers, and alerts when heartbeats stop.

One job per module (the messages themselves, their bounded parsing and validation,
are the agent's own: :mod:`agent.outbound.messages`)::

    config.py      central.toml + agents.d/*.toml → CentralConfig
    storage.py     the SQLite store (the only module that writes SQL)
    ingest.py      verification and application of one signed message
    incidents.py   dead man's switch, check incidents, the flapping rule
    dispatch.py    the durable per-channel delivery queue, retries with backoff
    channels/      one file per alert channel (webhook, slack, email, telegram, pagerduty)
    views.py       what people see: the JSON API rows and the status page
    app.py         the ASGI routes
    server.py      Hypercorn (trio worker) and the receiver's tasks in one nursery
"""
