"""The HTTP front: the supervisor's own routes (`/_/events`, `/_/health`,
`/_/functions`, ...) and the server that carries them and the webhooks.

`app` builds the Starlette app, `door` checks every request first (host,
token, body bounds), `server` runs uvicorn with `fast_protocol` (or
`plain_protocol`), `records` and `catalog` are the JSON shapes it serves.
"""
