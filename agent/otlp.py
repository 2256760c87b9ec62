"""OTLP/HTTP protobuf for spans, encoded straight from ended spans (or record tuples).

OpenTelemetry's own encoder builds a message object per span, attribute and
value and costs 35-55 µs a span here; on a two-core machine that CPU is taken
from the app even when it runs in another process. This writes the protobuf
wire format directly (``opentelemetry-proto``'s ``trace.proto``: field numbers
below) and caches the encoding of attribute pairs, which repeat from request
to request (``db.system``, a statement text, a route), so a span costs a few
microseconds. ``tests/agent/test_otlp.py`` decodes the output with
opentelemetry-proto and compares it with the SDK encoder's, field by field.

The app imports this module (spans are encoded in the app, 128 at a time); sending them is
the helper's, in ``otlp_post``, so the app never imports the HTTP client for it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
# A span's ids and times are fixed-size: packed in a call each, tags included.
_pack_ids = struct.Struct(">HQQHQ").pack  # tag 1 len 16, trace id (two halves), tag 2 len 8, span id
_pack_parent = struct.Struct(">HQ").pack
_pack_times = struct.Struct("<BQBQ").pack
_LOW64 = (1 << 64) - 1
# The encoder runs in the app (spans are encoded there, in batches): each cache starts over past 2,000 entries
# or 512 KiB of encodings, so the caches of a process hold a few MB at most.
_CACHE_LIMIT = 2000  # entries per cache
_CACHE_BYTES = 512 * 1024  # bytes of encodings per cache
_cache_bytes: dict = {}  # id(cache) -> bytes of encodings held
_CACHED_MAX = 1024  # bytes: a longer encoding (a huge statement text) is not kept, so the caches stay small
_pair_cache: dict = {}


# Varints of 0.._SMALL - 1 (every tag, and the length of nearly every field and span) are looked up, not
# computed. The table is built in every app process at import: 2,048 entries take 0.3 ms and ~90 KB
# (16,384 took 4 ms and ~700 KB, twice over with the span prefixes, for spans few apps make).
_SMALL = 1 << 11
_SMALL_VARINTS = tuple([bytes((v,)) for v in range(0x80)] +
                       [bytes((low | 0x80, high)) for high in range(1, _SMALL >> 7) for low in range(0x80)])


def _varint(value: int) -> bytes:
    if 0 <= value < _SMALL:
        return _SMALL_VARINTS[value]
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf writes negative int64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value) -> bytes:
    # AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4, array_value 5
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, (tuple, list)):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    return _field(1, str(value).encode("utf-8", "replace"))


def _key_value(key: str, value) -> bytes:
    """KeyValue (key 1, value 2), cached: the same pairs come back request after request."""
    kind = type(value)  # True == 1 == 1.0: the type keeps their encodings apart, and a tuple's items' types
    cache_key = (key, value, kind, tuple(map(type, value))) if kind is tuple else (key, value, kind)
    try:
        cached = _pair_cache.get(cache_key)
    except TypeError:  # an unhashable value
        cache_key = None
        cached = None
    if cached is not None:
        return cached
    encoded = _field(1, key.encode("utf-8", "replace")) + _field(2, _any_value(value))
    if cache_key is not None and len(encoded) <= _CACHED_MAX and _admit(cache_key):
        _store(_pair_cache, cache_key, encoded, len(encoded))
    return encoded


_block_cache: dict = {}


def _attributes(number: int, attributes) -> bytes:
    """The repeated KeyValue field ``number``, cached whole: a DB span's attributes (system, statement,
    database, server) are the same set at every execution, so most spans cost one lookup here."""
    if not attributes:
        return b""
    key = _block_key(attributes)
    if key is None:
        return _encode_attributes(number, attributes)
    key = (number, key)
    cached = _block_cache.get(key)
    if cached is not None:
        return cached
    encoded = _encode_attributes(number, attributes)
    if len(encoded) <= 4 * _CACHED_MAX and _admit(key):
        _store(_block_cache, key, encoded, len(encoded))
    return encoded


def _block_key(attributes):
    """What a block of these attributes is cached by: their items and their values' types, since
    ``1 == True == 1.0`` (so are their hashes) and each is written differently; None when it must not
    be cached (an unhashable value, or a tuple, whose items' types the key would not tell)."""
    types = tuple(map(type, attributes.values()))
    if tuple in types:
        return None
    key = (tuple(attributes.items()), types)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _encode_attributes(number: int, attributes) -> bytes:
    if number == 9:
        return _span_attributes(attributes)
    tag = _SMALL_VARINTS[number << 3 | 2]
    out = []
    for key, value in attributes.items():
        pair = _key_value(key, value)
        out.append(tag + _varint(len(pair)) + pair)
    return b"".join(out)


# A span's attributes pair by pair, for a block not found whole: per key, its text and whole-number
# values' whole fields (tag, length and KeyValue), so a pair that repeats costs two lookups. A key that
# has shown more than _FIELD_VALUES values since the caches last started over (a path or a URL with an
# id, new at every request) is volatile: its values are encoded each time and not kept, and a block that
# holds it is not looked up whole (it would never be found).
_FIELD_VALUES = 1024  # more than an app's routes, methods or statuses; fewer than its ids
_FIELD_KEYS = 512
_FIELD_OVERHEAD = 100  # bytes a kept field costs beyond its own (a dict slot, the bytes object's header)
_fields: dict = {}  # key -> {str or int value -> field 9 of the pair}
_fields_bytes = [0]
_volatile: set = set()


def _span_attributes(attributes) -> bytes:
    out = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int:  # never bool or float: 1 == True == 1.0 would find another's field
            values = _fields.get(key)
            if values is not None:
                field = values.get(value)
                if field is not None:
                    out.append(field)
                    continue
            if kind is str:
                field = _text_field(key, value)
            else:
                pair = _field(1, key.encode("utf-8", "replace")) + _field(2, _any_value(value))
                field = b"\x4a" + _varint(len(pair)) + pair
            if key not in _volatile and len(field) <= _CACHED_MAX:
                _keep_field(key, values, value, field)
            out.append(field)
        else:
            pair = _key_value(key, value)
            out.append(b"\x4a" + _varint(len(pair)) + pair)
    return b"".join(out)


def _text_field(key: str, value: str) -> bytes:
    """Field 9 of a pair with a text value: KeyValue{key 1, value 2: AnyValue{string_value 1}}."""
    key_part = _key_parts.get(key)
    if key_part is None:
        key_part = _field(1, key.encode("utf-8", "replace"))
        if len(_key_parts) < _FIELD_KEYS:
            _key_parts[key] = key_part
    data = value.encode("utf-8", "replace")
    size = len(data)
    if size < _SMALL - 8:  # the lengths of the value, of AnyValue and of the pair are all small varints
        inner = 2 + (size > 127) + size  # AnyValue: tag, length, text
        pair = len(key_part) + 1 + (inner > 127) + 1 + inner
        if pair < _SMALL:
            return b"".join((b"\x4a", _SMALL_VARINTS[pair], key_part, b"\x12", _SMALL_VARINTS[inner], b"\x0a",
                             _SMALL_VARINTS[size], data))
    pair = key_part + _field(2, _field(1, data))
    return b"\x4a" + _varint(len(pair)) + pair


_key_parts: dict = {}  # attribute key -> its KeyValue key field


def _keep_field(key: str, values, value, field: bytes) -> None:
    if values is None:
        if len(_fields) >= _FIELD_KEYS:
            _reset_fields()
        values = _fields[key] = {}
    elif len(values) >= _FIELD_VALUES:
        _volatile.add(key)
        return
    size = len(field) + _FIELD_OVERHEAD
    if _fields_bytes[0] + size > _CACHE_BYTES:
        _reset_fields()
        values = _fields[key] = {}
    _fields_bytes[0] += size
    values[value] = field


def _reset_fields() -> None:
    _fields.clear()
    _volatile.clear()
    _fields_bytes[0] = 0


def encode_span(record: tuple) -> bytes:
    (trace_id, span_id, parent_id, _remote, name, kind, start, end, status, status_text, attributes, events,
     links, state, _scope_name, _scope_version) = record[:16]
    # 1 trace_id, 2 span_id (and 4 parent_span_id, after 3 trace_state) in one or two packs
    parts = [_pack_ids(0x0A10, trace_id >> 64, trace_id & _LOW64, 0x1208, span_id)]
    if state:
        parts.append(_field(3, state.encode()))
    if parent_id:
        parts.append(_pack_parent(0x2208, parent_id))
    name_kind = _name_kind_cache.get((name, kind))
    if name_kind is None:
        name_kind = _cached(_name_kind_cache, (name, kind),
                            _field(5, name.encode("utf-8", "replace")) + b"\x30" + _varint(kind))  # 5 name, 6 kind
    parts += [name_kind, _pack_times(0x39, start, 0x41, end),  # 7 start, 8 end (fixed64)
              _attributes(9, attributes)]
    for event_name, event_time, event_attributes in events or ():  # 11 events
        parts.append(_field(11, b"\x09" + _pack_fixed64(event_time) + _field(2, event_name.encode("utf-8", "replace"))
                            + _attributes(3, event_attributes)))
    for link_trace, link_span, link_attributes in links or ():  # 13 links
        parts.append(_field(13, b"\x0a\x10" + link_trace.to_bytes(16, "big") + b"\x12\x08"
                            + link_span.to_bytes(8, "big") + _attributes(4, link_attributes)))
    # 15 status (message 2, code 3); written empty for UNSET, as OpenTelemetry's encoder does
    if status or status_text:
        parts.append(_field(15, (_field(2, status_text.encode("utf-8", "replace")) if status_text else b"")
                            + (b"\x18" + _varint(status) if status else b"")))
    else:
        parts.append(b"\x7a\x00")
    parts.append(_FLAGS_REMOTE_PARENT if parent_id and _remote else _FLAGS)  # 16 flags
    return b"".join(parts)


_name_kind_cache: dict = {}
_FLAGS = b"\x85\x01" + _pack_fixed32(0x100 | 0x01)
_FLAGS_REMOTE_PARENT = b"\x85\x01" + _pack_fixed32(0x100 | 0x200 | 0x01)


def _cached(cache: dict, key, value: bytes, most: int = _CACHED_MAX) -> bytes:
    if len(value) > most:
        return value
    _store(cache, key, value, len(value))
    return value


def _admit(key) -> bool:
    """Whether a key missed by a cache should be kept: only when it was missed before. A value that is new
    at every request (a path with an id, a URL) would otherwise fill the caches and empty them every
    2,000 requests, the constant values with it, and cost each request the keeping."""
    seen = hash(key)
    if seen in _seen:
        return True
    if len(_seen) >= 4 * _CACHE_LIMIT:
        _seen.clear()
    _seen.add(seen)
    return False


_seen: set = set()  # hashes of keys missed once


def _store(cache: dict, key, value, size: int) -> None:
    """Keeps ``value`` in ``cache``, which starts over when full (entries or bytes)."""
    held = _cache_bytes.get(id(cache), 0) + size
    if len(cache) >= _CACHE_LIMIT or held > _CACHE_BYTES:
        cache.clear()
        held = size
    _cache_bytes[id(cache)] = held
    cache[key] = value


class Record(NamedTuple):
    """A span as a tuple (the SDK bridge's, and tests'): ``span_field`` reads a LeanSpan's fields by
    these names, so either can be encoded."""

    trace_id: int
    span_id: int
    parent_id: int
    parent_remote: bool
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_text: str
    attributes: dict
    events: Optional[list]
    links: Optional[list]
    trace_state: str  # the header (a LeanSpan holds a TraceState)
    scope_name: str
    scope_version: str
    shared: object = None  # as a LeanSpan's: the SharedAttributes its attributes are (a DB span's), or None
    deferred: object = None  # as a LeanSpan's: a URL left for the URL rules (an outgoing call's), or None

    @property
    def scope(self) -> tuple:
        return self.scope_name, self.scope_version


def span_field(span, block: Optional[bytes] = None) -> bytes:
    """One ended span (a LeanSpan or a ``Record``) as field 2 of ScopeSpans, its tag and length included:
    what the pipeline keeps of a span, so the helper only frames spans and posts them.

    ``block``: the span's attributes already encoded, when the caller knows them (an unchanged statement
    set's, kept on the set: ``tracer.SharedAttributes``). The common span (no trace state, events,
    links or status) is written here in one join: one ``struct`` call for its ids and one for its
    times, its name and kind from a dictionary per kind, its attributes block found by the attributes'
    items and a check of the type of each value that is not a string (``1 == True == 1.0``); anything
    else goes through ``encode_span``. Checked against OpenTelemetry's encoder in tests/agent/test_otlp.py."""
    parent_id = span.parent_id
    if not (span.trace_state or span.events or span.links or span.status_code or span.status_text):
        kind, name = span.kind, span.name
        names = _names_by_kind.get(kind)  # a dict per kind: no key tuple to make and hash
        name_kind = names.get(name) if names is not None else None
        if name_kind is None:
            name_kind = _name_kind(name, kind)
        if block is None:
            block = attributes_block(span.attributes)
        if parent_id:
            ids = _pack_span_parent(0x1208, span.span_id, 0x2208, parent_id)  # 2 span_id, 4 parent_span_id
            tail = _STATUS_UNSET_FLAGS_REMOTE if span.parent_remote else _STATUS_UNSET_FLAGS
        else:  # a root
            ids = _pack_span(0x1208, span.span_id)
            tail = _STATUS_UNSET_FLAGS
        size = 36 + len(ids) + len(name_kind) + len(block) + len(tail)  # trace id 18, times 18
        return b"".join((_SPAN_PREFIXES[size] if size < _SMALL else b"\x12" + _varint(size),
                         b"\x0a\x10", span.trace_id.to_bytes(16, "big"),  # 1 trace_id
                         ids, name_kind, _pack_times(0x39, span.start_ns, 0x41, span.end_ns), block, tail))
    encoded = encode_span(span if isinstance(span, tuple) else _record(span))
    size = len(encoded)
    return (_SPAN_PREFIXES[size] if size < _SMALL else b"\x12" + _varint(size)) + encoded


def _record(span) -> Record:
    state = span.trace_state
    return Record(span.trace_id, span.span_id, span.parent_id, span.parent_remote, span.name, span.kind,
                  span.start_ns, span.end_ns, span.status_code, span.status_text, span.attributes, span.events,
                  span.links, state.to_header() if state else "", span.scope[0], span.scope[1])


def attributes_block(attributes: dict) -> bytes:
    """A span's attributes block (field 9): looked up by the attributes' items, then the type of each
    value that is not a string checked (a key of items and types costs 4,000 instructions a span)."""
    if not attributes:
        return b""
    if _volatile and not _volatile.isdisjoint(attributes):  # a path with an id: never the same block twice
        return _span_attributes(attributes)
    items = tuple(attributes.items())
    try:
        found = _item_blocks.get(items)
    except TypeError:  # an unhashable value
        return _encode_attributes(9, attributes)
    if found is not None:
        block, checks = found
        for key, kind in checks:
            if type(attributes[key]) is not kind:
                return _encode_attributes(9, attributes)  # its pairs are cached by their types
        return block
    block = _encode_attributes(9, attributes)
    if _admit(items):
        _keep_by_items(items, block)
    return block


def frame_request(batches) -> bytes:
    """ExportTraceServiceRequest bytes from [(resource attributes, [(scope name, scope version, [span
    field, ...]), ...]), ...]: the spans as ``span_field`` wrote them, framed from their lengths, every
    piece copied once, by the last join."""
    body = []
    for resource, groups in batches:
        resource_field = _field(1, _attributes(1, resource))
        pieces = [b"", resource_field]
        size = len(resource_field)
        for name, version, spans in groups:
            scope = _field(1, name.encode()) + (_field(2, version.encode()) if version else b"")
            scope_field = _SMALL_VARINTS[1 << 3 | 2] + _varint(len(scope)) + scope
            inner = len(scope_field) + sum(map(len, spans))
            header = b"\x12" + _varint(inner)  # ResourceSpans 2 scope_spans
            pieces += (header, scope_field)
            pieces += spans
            size += len(header) + inner
        pieces[0] = b"\x0a" + _varint(size)  # ExportTraceServiceRequest 1 resource_spans
        body += pieces
    return b"".join(body)


def encode_request(batches) -> bytes:
    """ExportTraceServiceRequest bytes from [(resource attributes, [record tuple, ...]), ...] (``Record``'s
    fields in order): spans grouped by scope, in the order each scope first appears."""
    framed = []
    for resource, records in batches:
        scopes: dict = {}
        for record in records:
            record = Record(*record)
            scopes.setdefault((record.scope_name, record.scope_version), []).append(span_field(record))
        framed.append((resource, [(name, version, spans) for (name, version), spans in scopes.items()]))
    return frame_request(framed)


_item_blocks: dict = {}  # items -> (block, the keys and types of its values that are not strings)


def _keep_by_items(items: tuple, block: bytes) -> None:
    checks = tuple((key, type(value)) for key, value in items if type(value) is not str)
    if any(kind is tuple for _, kind in checks):
        return  # a tuple's items would need their types checked too: encoded each time, from its pairs
    if len(block) <= 4 * _CACHED_MAX:
        _store(_item_blocks, items, (block, checks), len(block))


_names_by_kind: dict = {}  # kind -> {name: encoded name and kind}


def _name_kind(name: str, kind: int) -> bytes:
    encoded = _field(5, name.encode("utf-8", "replace")) + b"\x30" + _varint(kind)  # 5 name, 6 kind
    names = _names_by_kind.get(kind)
    if names is None:
        if len(_names_by_kind) >= 16:  # kinds are 1-5; anything else is not kept growing
            for dropped in _names_by_kind.values():
                _cache_bytes.pop(id(dropped), None)
            _names_by_kind.clear()
        names = _names_by_kind[kind] = {}
    return _cached(names, name, encoded)


_pack_span_parent = struct.Struct(">HQHQ").pack  # 2 span_id, 4 parent_span_id (no trace state between)
_pack_span = struct.Struct(">HQ").pack  # 2 span_id (a root)
_SPAN_PREFIXES = tuple(b"\x12" + v for v in _SMALL_VARINTS)
_STATUS_UNSET_FLAGS = b"\x7a\x00" + _FLAGS
_STATUS_UNSET_FLAGS_REMOTE = b"\x7a\x00" + _FLAGS_REMOTE_PARENT
