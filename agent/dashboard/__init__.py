"""The local web dashboard: fleet, asset and alert pages, a JSON API, operator feedback.

Served by ``edgewatch run --http HOST:PORT`` from the agent's own process (a task of
the runtime) or by ``edgewatch dashboard`` on a database alone (docs/dashboard.md).
Starlette, Jinja2 and uvicorn are the optional ``dashboard`` extra, imported only
when a dashboard is served.
"""
