"""Long-running entry points: the Slack review app and the web-form intake.

Both answer every request in bounded time through one server helper (:mod:`~triage.servers.http`)
and never hold the store: what they accept goes to a spool first (:mod:`triage.spool`).
"""
