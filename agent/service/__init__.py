"""Running as a service: the daemon (the one place that wires the stages together),
liveness (the watchdog), systemd notification, the pid file and reload.

May import every stage below it; never cli.
"""
