"""The reference central receiver: verifies, remembers, and alerts when heartbeats stop.

One job per module (the messages themselves, their bounded parsing and validation,
are the agent's own: :mod:`agent.outbound.messages`)::

    config.py      central.toml + agents.d/*.toml → CentralConfig
    storage.py     the SQLite store (the only module that writes SQL)
    ingest.py      verification and application of one signed message
    incidents.py   dead man's switch, check incidents, the flapping rule
    maintenance.py maintenance windows (maintenance_cli.py: ``central maintenance``)
    history.py     observations, hourly rollups, time-weighted uptime (history_store.py
                   holds their SQL, latency_histogram.py the p50/p95 buckets)
    history_api.py the ``/api/v1/checks/<agent>/<check>/history`` endpoint
    routes.py      the read-only routes beyond app.py's own
    metrics.py     ``/metrics`` in the Prometheus text format
    dispatch.py    the durable per-channel delivery queue, retries with backoff
    channels/      one file per alert channel (webhook, slack, email, telegram, pagerduty,
                   alertmanager)
    views.py       what people see: the JSON API rows and the status page
    page.py        the status page and check pages with history (svg.py draws the charts)
    app.py         the ASGI routes
    server.py      Hypercorn (trio worker) and the receiver's tasks in one nursery
"""
