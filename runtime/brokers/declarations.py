"""The `brokers`, `sources` and `sinks` sections of a project's YAML, validated (SPEC 10).

They may stand in fnrun.yaml and in any YAML file of the functions folder.
Each file is parsed on its own (`parse_sections`), every mistake recorded
at its FILE:LINE:COL; then `combine` checks what spans files: names used
twice, a source or sink naming a broker nobody declared, fields that do not
fit the broker's kind, a name that is also a function's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from runtime import plugins
from runtime.brokers.base import KINDS
from runtime.brokers.specs import BrokerSpec, SinkSpec, SourceSpec
from runtime.errors import ManifestError, Where
from runtime.project.projectfiles import read_regular
from runtime.project.settings_loader import retry_policy, timeout
from runtime.project.yamlnodes import Node, Reader, decode, suggest
from runtime.specs import Defaults

SECTIONS = ("brokers", "sources", "sinks")
NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PREFETCH = 10_000
MAX_SINK_CONCURRENCY = 256
FAMILY = {"amqp": "amqp", "amqps": "amqp", "kafka": "kafka", "nats": "nats", "mqtt": "mqtt",
          "mqtts": "mqtt", "redis": "redis", "rediss": "redis"}
"""URL scheme -> the kind of broker, which decides the fields a source or sink takes."""
SOURCE_FIELDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required, optional), besides broker, type and prefetch
    "amqp": (("queue",), ("exchange", "routing_key")),
    "kafka": (("topic",), ("group", "from")),
    "nats": (("subject",), ("stream", "durable", "ack_wait")),
    "mqtt": (("topic",), ("qos", "client_id")),
    "redis": (("stream",), ("group", "from", "consumer", "ack_wait")),
}
MAX_ACK_WAIT = 3600.0
SINK_FIELDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required, optional), besides broker, events, format, retry, timeout, concurrency
    "amqp": ((), ("queue", "exchange", "routing_key")),
    "kafka": (("topic",), ()),
    "nats": (("subject",), ("stream",)),
    "mqtt": (("topic",), ("qos",)),
    "redis": (("stream",), ()),
}
SOURCE_COMMON = ("broker", "type", "prefetch")
SINK_COMMON = ("broker", "events", "format", "retry", "timeout", "concurrency")
TEMPLATE_FIELDS = ("routing_key", "subject")
"""Sink fields that may name event attributes: `routing_key: "{type}"`."""
TEMPLATE_NAMES = ("type", "subject", "source")
ENDPOINT_KEYS = ("queue", "topic", "subject", "stream")


def _all(table: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> tuple[str, ...]:
    return tuple(sorted({f for req, opt in table.values() for f in req + opt}))


@dataclass
class Declared:
    """One declaration and where each of its keys stands (for checks across files)."""

    spec: Any
    keys: dict[str, Where] = field(default_factory=dict)


@dataclass
class Parsed:
    """The broker sections of one file (valid entries only; the errors went to the list)."""

    file: Path
    brokers: dict[str, Declared] = field(default_factory=dict)
    sources: dict[str, Declared] = field(default_factory=dict)
    sinks: dict[str, Declared] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    """Brokers declared with an error (reported): what names them is not reported again."""


@dataclass(frozen=True)
class Declarations:
    """What a project declares about brokers, checked across its files."""

    brokers: Mapping[str, BrokerSpec] = field(default_factory=dict)
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    sinks: Mapping[str, SinkSpec] = field(default_factory=dict)


def parse_sections(
    reader: Reader, top: Mapping[str, Node], defaults: Defaults, errors: list[ManifestError],
    environ: Mapping[str, str] = os.environ,
) -> Parsed:
    """The `brokers`, `sources` and `sinks` of one file's top-level mapping."""
    parsed = Parsed(reader.file)
    sections: dict[str, tuple[dict[str, Declared], Callable[[Node, Node], Declared]]] = {
        "brokers": (parsed.brokers, lambda n, v: _broker(reader, n, v, environ)),
        "sources": (parsed.sources, lambda n, v: _source(reader, n, v)),
        "sinks": (parsed.sinks, lambda n, v: _sink(reader, n, v, defaults)),
    }
    for section, (out, parse) in sections.items():
        node = top.get(section)
        if node is None or node.tag == "tag:yaml.org,2002:null":
            continue
        try:
            reader.mapping(node, section)
        except ManifestError as exc:
            errors.append(exc)
            continue
        for name_node, value in node.value:
            try:
                _check_name(reader, name_node, section)
                out[name_node.value] = parse(name_node, value)
            except ManifestError as exc:
                errors.append(exc)
                if section == "brokers":
                    parsed.failed.add(str(name_node.value))
    return parsed


def parse_config(file: Path, defaults: Defaults, errors: list[ManifestError]) -> Parsed:
    """The broker sections of fnrun.yaml (the rest of it is the settings loader's)."""
    try:
        reader = Reader(file, decode(file, read_regular(file, 1024 * 1024)))
        root = reader.compose()
    except ManifestError:
        return Parsed(file)  # load_settings reported it already
    if not isinstance(root, yaml.MappingNode):
        return Parsed(file)
    top = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    return parse_sections(reader, top, defaults, errors)


def combine(
    parts: Iterable[Parsed], functions: Mapping[str, Where], errors: list[ManifestError]
) -> Declarations:
    """Check what spans files and keep what is valid; every error goes to `errors`.

    Args:
        functions: the project's function names and where each is declared.
    """
    brokers: dict[str, Declared] = {}
    sources: dict[str, Declared] = {}
    sinks: dict[str, Declared] = {}
    failed: set[str] = set()
    for part in parts:
        failed |= part.failed
        for section, found, mine in (("broker", brokers, part.brokers),
                                     ("source", sources, part.sources),
                                     ("sink", sinks, part.sinks)):
            for name, declared in mine.items():
                first = found.get(name)
                if first is not None:
                    errors.append(ManifestError(declared.spec.where, (
                        f"duplicate {section} name {name!r} (first declared at "
                        f"{first.spec.where})")))
                elif section != "broker" and name in functions:
                    errors.append(ManifestError(declared.spec.where, (
                        f"{section} name {name!r} is also a function's (declared at "
                        f"{functions[name]}); a {section} needs a name of its own")))
                else:
                    found[name] = declared
    for section, kept in (("source", sources), ("sink", sinks)):
        for name in list(kept):
            if kept[name].spec.broker in failed and kept[name].spec.broker not in brokers:
                del kept[name]  # its broker's error is the one to fix
                continue
            problem = _fits(kept[name], brokers, section)
            if problem is not None:
                errors.append(problem)
                del kept[name]
    return Declarations(
        brokers={n: d.spec for n, d in brokers.items()},
        sources={n: d.spec for n, d in sources.items()},
        sinks={n: d.spec for n, d in sinks.items()},
    )


def misfit(
    kind: str, spec: SourceSpec | SinkSpec, given: Iterable[str]
) -> tuple[str | None, str] | None:
    """Why the fields `given` of `spec` do not fit a broker of `kind`, or None.

    Returns:
        (the key at fault, or None for the whole declaration; the message).
    """
    sink = isinstance(spec, SinkSpec)
    table = SINK_FIELDS if sink else SOURCE_FIELDS
    noun = "sink" if sink else "source"
    what = f"{noun} {spec.name!r}"
    required, optional = table[kind]
    common = SINK_COMMON if sink else SOURCE_COMMON
    present = set(given)
    for key in sorted(present - set(common) - set(required) - set(optional)):
        takes = ", ".join(required + optional)
        return key, (f"{what}: {key!r} does not fit broker {spec.broker!r} ({kind}; a {noun} "
                     f"there takes {takes})")
    for key in required:
        if key not in present:
            return None, f"{what} needs {key!r} for a {kind} broker ({spec.broker!r})"
    if kind == "amqp" and sink and ("queue" in present) == ("exchange" in present):
        return "queue" if "queue" in present else None, (
            f"{what} needs a queue or an exchange (one of them) for a RabbitMQ broker")
    if kind == "amqp" and "routing_key" in present and "exchange" not in present:
        return "routing_key", f"{what}: a routing_key needs an exchange"
    return None


def _fits(
    declared: Declared, brokers: Mapping[str, Declared], section: str
) -> ManifestError | None:
    spec = declared.spec
    broker = brokers.get(spec.broker)
    at = declared.keys.get("broker", spec.where)
    if broker is None:
        known = ", ".join(sorted(brokers)) or "none declared"
        hint = suggest(spec.broker, brokers)
        return ManifestError(at, f"{section} {spec.name!r}: unknown broker {spec.broker!r} "
                                 f"({hint}known: {known})")
    kind = broker.spec.kind
    if kind is None:  # its URL is in a variable not set here: checked again at start
        endpoints = [k for k in ENDPOINT_KEYS if k in declared.keys]
        if len(endpoints) > 1 and endpoints != ["subject", "stream"]:
            return ManifestError(declared.keys[endpoints[1]], (
                f"{section} {spec.name!r}: a {section} takes one of queue, topic, subject or "
                f"stream, not both {endpoints[0]!r} and {endpoints[1]!r}"))
        return None
    problem = misfit(kind, spec, declared.keys)
    if problem is None:
        return None
    key, message = problem
    return ManifestError(declared.keys[key] if key else spec.where, message)


def _check_name(reader: Reader, node: Node, section: str) -> None:
    name = reader.string(node, f"{section} name")
    if not NAME.fullmatch(name):
        raise reader.error(node, f"bad {section[:-1]} name {name!r} (use [a-z][a-z0-9-]{{0,62}})")


def _broker(reader: Reader, name: Node, node: Node, environ: Mapping[str, str]) -> Declared:
    what = f"broker {name.value!r}"
    fields = reader.mapping(node, what, allowed=("url", "url_env"))
    if ("url" in fields) == ("url_env" in fields):
        raise reader.error(node, f"{what} needs either url or url_env (one of them)")
    keys = {k: reader.where(v) for k, v in fields.items()}
    if "url" in fields:
        url = reader.string(fields["url"], f"{what} url")
        kind = _kind(reader, fields["url"], url, what)
        if _password(url):
            raise reader.error(fields["url"], (
                f"{what}: a literal URL must not hold a password; put the URL in an "
                "environment variable and use url_env"))
        spec = BrokerSpec(name.value, reader.where(name), url=url, kind=kind)
        return Declared(spec, keys)
    variable = reader.string(fields["url_env"], f"{what} url_env")
    if not ENV_NAME.fullmatch(variable):
        raise reader.error(fields["url_env"],
                           f"{what}: url_env {variable!r} is not a variable name")
    value = environ.get(variable)
    found = _kind(reader, fields["url_env"], value, f"{what} ({variable})") if value else None
    return Declared(BrokerSpec(name.value, reader.where(name), url_env=variable, kind=found), keys)


def _kind(reader: Reader, node: Node, url: str, what: str) -> str:
    """The broker kind of `url`; an unknown scheme or a missing client is an error here."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in FAMILY:
        known = ", ".join(f"{s}://" for s in KINDS)
        raise reader.error(node, f"{what}: unknown broker URL scheme {scheme or url!r:.60} "
                                 f"(known: {known})")
    client = KINDS[scheme]
    if importlib.util.find_spec(client.client) is None:
        raise reader.error(node, f"{what}: {scheme}:// brokers need the {client.client} client: "
                                 f"pip install 'fnrun[{client.extra}]'")
    return FAMILY[scheme]


def _password(url: str) -> bool:
    netloc = url.partition("://")[2].split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    return bool(at) and ":" in userinfo


def _source(reader: Reader, name: Node, node: Node) -> Declared:
    what = f"source {name.value!r}"
    allowed = SOURCE_COMMON + _all(SOURCE_FIELDS)
    fields = reader.mapping(node, what, allowed=allowed, required=("broker", "type"))
    keys = {k: reader.where(v) for k, v in fields.items()}
    text = {k: reader.string(v, f"{what} {k}") for k, v in fields.items()
            if k not in ("prefetch", "qos", "ack_wait")}
    _check_type(reader, fields["type"], text["type"], what)
    values: dict[str, Any] = {k: text[k] for k in ("queue", "exchange", "routing_key", "topic",
                                                    "group", "subject", "stream", "durable",
                                                    "client_id", "consumer") if k in text}
    for key, value in values.items():
        if not value or len(value) > 255:
            raise reader.error(fields[key], f"{what} {key} must be 1 to 255 characters")
    if "from" in text:
        if text["from"] not in ("earliest", "latest"):
            raise reader.error(fields["from"], f"{what} from must be earliest or latest, "
                                               f"not {text['from']!r}")
        values["start"] = text["from"]
    if "prefetch" in fields:
        values["prefetch"] = _bounded(reader, fields["prefetch"], f"{what} prefetch", MAX_PREFETCH)
    if "qos" in fields:
        values["qos"] = _qos(reader, fields["qos"], what)
    if "ack_wait" in fields:
        values["ack_wait"] = _ack_wait(reader, fields["ack_wait"], what)
    spec = SourceSpec(name.value, reader.where(name), broker=text["broker"], type=text["type"],
                      **values)
    return Declared(spec, keys)


def _ack_wait(reader: Reader, node: Node, what: str) -> float:
    """How long the broker waits for an acknowledgement before it hands the message out
    again (NATS ack_wait; Redis: when another consumer's pending entries are claimed)."""
    seconds = reader.duration(node, f"{what} ack_wait")
    if not 1 <= seconds <= MAX_ACK_WAIT:
        raise reader.error(node, f"{what} ack_wait must be 1s to 1h")
    return seconds


def _sink(reader: Reader, name: Node, node: Node, defaults: Defaults) -> Declared:
    what = f"sink {name.value!r}"
    allowed = SINK_COMMON + _all(SINK_FIELDS)
    fields = reader.mapping(node, what, allowed=allowed, required=("broker", "events"))
    keys = {k: reader.where(v) for k, v in fields.items()}
    text = {k: reader.string(v, f"{what} {k}") for k, v in fields.items()
            if k not in ("qos", "retry", "timeout", "concurrency")}
    problem = plugins.load(plugins.TRIGGERS["event"]).check_pattern(text["events"])
    if problem:
        raise reader.error(fields["events"], f"{what} events: {problem}")
    values: dict[str, Any] = {k: text[k] for k in ("queue", "exchange", "routing_key", "topic",
                                                    "subject", "stream") if k in text}
    for key, value in values.items():
        if not value or len(value) > 255:
            raise reader.error(fields[key], f"{what} {key} must be 1 to 255 characters")
        _check_template(reader, fields[key], key, value, what)
    if "format" in text:
        if text["format"] not in ("binary", "structured"):
            raise reader.error(fields["format"], f"{what} format must be binary or structured, "
                                                 f"not {text['format']!r}")
        values["format"] = text["format"]
    if "qos" in fields:
        values["qos"] = _qos(reader, fields["qos"], what)
    if "timeout" in fields:
        values["timeout"] = timeout(reader, fields["timeout"], f"{what} timeout")
    if "concurrency" in fields:
        values["concurrency"] = _bounded(reader, fields["concurrency"], f"{what} concurrency",
                                         MAX_SINK_CONCURRENCY)
    values["retry"] = defaults.retry
    if "retry" in fields:
        values["retry"] = retry_policy(reader, fields["retry"], defaults.retry, what)
    spec = SinkSpec(name.value, reader.where(name), broker=text["broker"], events=text["events"],
                    **values)
    return Declared(spec, keys)


def _check_type(reader: Reader, node: Node, event_type: str, what: str) -> None:
    problem = plugins.load(plugins.TRIGGERS["event"]).check_pattern(event_type)
    if problem is None and "*" in event_type:
        problem = "an event type has no wildcards"
    if problem:
        raise reader.error(node, f"{what} type: {problem.replace('event pattern', 'type')}")


def _check_template(reader: Reader, node: Node, key: str, value: str, what: str) -> None:
    try:
        names = [n for _, n, _, _ in string.Formatter().parse(value) if n is not None]
    except ValueError as exc:
        raise reader.error(node, f"{what} {key}: {exc} (write a literal brace as {{{{ or }}}})") \
            from None
    if names and key not in TEMPLATE_FIELDS:
        raise reader.error(node, f"{what} {key} takes no {{...}} templates "
                                 f"(only {' and '.join(TEMPLATE_FIELDS)} do)")
    for found in names:
        if found not in TEMPLATE_NAMES:
            known = ", ".join("{" + n + "}" for n in TEMPLATE_NAMES)
            raise reader.error(node, f"{what} {key}: unknown placeholder {{{found}}} "
                                     f"(known: {known})")


def render(template: str, attributes: Mapping[str, str | None]) -> str:
    """A sink's `routing_key` or `subject` for one event (`{type}` -> its type)."""
    return template.format_map({n: attributes.get(n) or "" for n in TEMPLATE_NAMES})


def _bounded(reader: Reader, node: Node, what: str, maximum: int) -> int:
    value = reader.integer(node, what, minimum=1)
    if value > maximum:
        raise reader.error(node, f"{what} must be 1 to {maximum}, got {value}")
    return value


def _qos(reader: Reader, node: Node, what: str) -> int:
    value = reader.integer(node, f"{what} qos", minimum=0)
    if value != 1:
        raise reader.error(node, f"{what} qos must be 1 (at least once: acknowledged after the "
                                 "store, confirmed by the broker)")
    return value


def last_good(new: Declarations, old: Declarations, bad_files: set[Path]) -> Declarations:
    """`new` plus the running declarations of files that now have errors (hot reload)."""
    def keep(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(now)
        for name, spec in before.items():
            if name not in out and spec.where.file in bad_files:
                out[name] = spec
        return out

    return replace(new, brokers=keep(new.brokers, old.brokers),
                   sources=keep(new.sources, old.sources), sinks=keep(new.sinks, old.sinks))
