"""A sync webhook: greets whoever calls it, in JSON."""


def hello(event, ctx):
    body = event.data if isinstance(event.data, dict) else {}
    name = body.get("name") or event.http.query.get("name")
    if not name:
        return 400, {"error": "say who you are: ?name=... or {\"name\": ...}"}
    if not isinstance(name, str) or len(name) > 100:
        return 422, {"error": "name must be a string of at most 100 characters"}
    ctx.log.info("greeting %s", name)
    return {"hello": name, "method": event.http.method}
