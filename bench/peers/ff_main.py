"""functions-framework peer: an HTTP no-op, served by its default server."""


def noop(request: object) -> str:
    return "ok"
