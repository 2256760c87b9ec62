"""Wire-compatible "lite" views of OTLP trace requests, for decoding speed.

The OTLP ``Span`` message is decoded by upb (protobuf's C implementation), but
reading each ``KeyValue`` of each span from Python costs more than everything
else the collector does. These message types have the same field numbers and
wire types as OTLP's ``ExportTraceServiceRequest`` / ``ResourceSpans`` /
``ScopeSpans`` / ``Span``, except that attributes, events, links, status,
resource and scope stay *serialized bytes*. The converter then decodes each
distinct attribute set once and reuses the result (the spans of one endpoint
repeat the same ``db.statement``, ``http.route``, ``server.address``...).

``trace_state`` is read (as text) because load-test traffic is marked there
(``takealook=load:<run label>``, see ``convert.load_label``). Fields not
declared here (flags, dropped counts, schema_url) are skipped by the parser as
unknown fields.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_BYTES, _STRING, _INT32, _FIXED64, _MESSAGE = _F.TYPE_BYTES, _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_FIXED64, _F.TYPE_MESSAGE
_ONE, _MANY = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# message name -> [(field name, number, type, label, message type name)]
_MESSAGES = {
    "TraceRequest": [("resource_spans", 1, _MESSAGE, _MANY, "ResourceSpans")],
    "ResourceSpans": [("resource", 1, _BYTES, _ONE, None), ("scope_spans", 2, _MESSAGE, _MANY, "ScopeSpans")],
    "ScopeSpans": [("scope", 1, _BYTES, _ONE, None), ("spans", 2, _MESSAGE, _MANY, "Span")],
    "Span": [
        ("trace_id", 1, _BYTES, _ONE, None),
        ("span_id", 2, _BYTES, _ONE, None),
        ("trace_state", 3, _STRING, _ONE, None),
        ("parent_span_id", 4, _BYTES, _ONE, None),
        ("name", 5, _STRING, _ONE, None),
        ("kind", 6, _INT32, _ONE, None),
        ("start_time_unix_nano", 7, _FIXED64, _ONE, None),
        ("end_time_unix_nano", 8, _FIXED64, _ONE, None),
        ("attributes", 9, _BYTES, _MANY, None),
        ("events", 11, _BYTES, _MANY, None),
        ("links", 13, _BYTES, _MANY, None),
        ("status", 15, _BYTES, _ONE, None),
    ],
}


def _build():
    proto = descriptor_pb2.FileDescriptorProto(
        name="takealook/collector/otlp_lite.proto", package="takealook.otlp_lite", syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".takealook.otlp_lite.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"takealook.otlp_lite.{name}"))
            for name in _MESSAGES}


_classes = _build()
TraceRequest = _classes["TraceRequest"]
