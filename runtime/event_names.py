"""What an event's type and id may be (SPEC 4): one rule for every way in, a
handler's `ctx.emit` (in the worker child), `POST /_/events` and its CloudEvents
modes (`runtime.cloudevents`), and `fnrun emit`.

A type no trigger pattern can match would be stored and delivered to nobody;
an id is shown one per line in tables and logs. Imported by the worker child:
builtins only.
"""

MAX_EVENT_TYPE = 255
MAX_EVENT_ID = 255
TYPE_CHARS = frozenset("-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
"""What a segment of an event type is made of (as `triggers.event` checks patterns,
without `re`): another type could never match a trigger."""
TYPE_RULE = (f"dot-separated segments of letters, digits, '_' or '-' "
             f"(at most {MAX_EVENT_TYPE} characters)")
"""What a type must be, as error messages end: "type 'a..b' is not " + TYPE_RULE."""
ID_RULE = f"1 to {MAX_EVENT_ID} printable characters"


def is_event_type(value: str) -> bool:
    """Whether `value` is a type a trigger pattern can match (`TYPE_RULE`)."""
    return len(value) <= MAX_EVENT_TYPE and all(
        segment and TYPE_CHARS.issuperset(segment) for segment in value.split(".")
    )


def is_event_id(value: str) -> bool:
    """Whether `value` is a usable event id (`ID_RULE`)."""
    # Unprintable covers lone surrogates too, which no store can encode.
    return 0 < len(value) <= MAX_EVENT_ID and value.isprintable()
