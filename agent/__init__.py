"""heartwire: checks private services over TCP and reports outbound only."""

__version__ = "0.1.0"
