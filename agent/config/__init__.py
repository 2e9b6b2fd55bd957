"""Reading the agent's configuration: load (files, drop-ins, strict tables into frozen
dataclasses), destinations, view (`config show`) and editing (`checks add/set/remove`).

May import model, errors, common and checks (the probe registry reads each kind's
options); never schedule, outbound, service or cli.
"""
