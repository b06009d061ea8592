"""contextd-collector: the receiving end of contextd's reports (DESIGN section 12).

A separate top-level package, installed with the `contextd[collector]` extra: it checks each
report's HMAC as contextd signs it, stores it once per `report_id` in SQLite or PostgreSQL,
and shows the fleet (JSON API, HTML page, Prometheus metrics).

What it must never do: be imported by the agent (nothing under contextd/ imports it), or
answer 2xx for a report before it is committed.
"""
