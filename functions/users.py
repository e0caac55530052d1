"""Starter event functions: a welcome step and an audit trail.

Try it: `fnrun emit user.created --data '{"email": "ada@example.com"}'`,
then `fnrun history`.
"""


def welcome(event, ctx):
    email = event.data["email"]
    ctx.log.info("welcoming %s (attempt %d)", email, ctx.attempt)
    # Emitted events are published only if this invocation succeeds.
    ctx.emit("email.queued", {"to": email, "template": "welcome"}, subject=email)
    return {"queued": email}


def audit(event, ctx):
    ctx.log.info("%s %s subject=%s", event.type, event.id, event.subject)
    return {"seen": event.type}
