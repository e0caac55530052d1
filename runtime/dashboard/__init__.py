"""The dashboard at `/_/ui` (SPEC section 11): functions, runs, a run's page and
trace, dead letters with Replay, and a Send event form, in a browser.

Plain files under `static/` (no build step, no CDN) read fnrun's JSON API.
`routes.create(view, token)` gives the Starlette app mounted at `/_/ui` and
the session gate the front door (`runtime.http.door.Door`) consults for cookies.
"""
