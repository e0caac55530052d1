"""Three ways to run a function: an event, an HTTP request, a schedule."""


def greet(event, ctx):
    """`fnrun emit greet.requested --data '{"name": "Ada"}'`"""
    name = (event.data or {}).get("name", "world") if isinstance(event.data, dict) else "world"
    ctx.log.info("hello, %s! (attempt %d)", name, ctx.attempt)
    return {"greeting": f"hello, {name}!"}


def hello_http(event, ctx):
    """`curl localhost:8080/hello?name=Ada`: the return value is the HTTP response."""
    body = event.data if isinstance(event.data, dict) else {}
    name = body.get("name") or event.http.query.get("name") or "world"
    return {"greeting": f"hello, {name}!", "method": event.http.method}


def tick(event, ctx):
    """Runs every minute; the event id is derived from the tick, so it never fires twice."""
    ctx.log.info("tick at %s", event.time.isoformat())
