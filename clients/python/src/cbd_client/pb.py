"""The generated cbd.v1 messages, in one namespace: `pb.BreakerSpec`, `pb.Event`, ...
(the modules themselves are `pb.types_pb2`, `pb.breakers_pb2`, `pb.admin_pb2`)."""

from google.protobuf import duration_pb2

from ._pb.cbd.v1 import admin_pb2, admin_pb2_grpc, breakers_pb2, breakers_pb2_grpc, types_pb2
from ._pb.cbd.v1.admin_pb2 import *  # noqa: F401,F403
from ._pb.cbd.v1.breakers_pb2 import *  # noqa: F401,F403
from ._pb.cbd.v1.types_pb2 import *  # noqa: F401,F403

_SPEC_FIELDS = types_pb2.BreakerSpec.DESCRIPTOR.fields_by_name
# Every Duration field of the spec, read from the proto (new knobs included).
_DURATIONS = {name for name, f in _SPEC_FIELDS.items()
              if f.message_type is not None and f.message_type.full_name == "google.protobuf.Duration"}
_FLAGS = {name for name, f in _SPEC_FIELDS.items() if f.type == f.TYPE_BOOL}


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds (a float) as a protobuf Duration."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(seconds * 1e9)))
    return d


def spec(**fields) -> types_pb2.BreakerSpec:
    """A BreakerSpec from keyword fields, durations given in seconds:
    `spec(consecutive_failures=2, open_duration=30, cache_ttl=5, fallback=Fallback.FAIL_CLOSED)`.
    `count_window=N` is CountWindow(calls=N); `time_window=(seconds, buckets)`; the
    on/off knobs (`slow_includes_failures=True`) take a bool."""
    out = {}
    for key, value in fields.items():
        if key in _DURATIONS:
            out[key] = duration(value)
        elif key == "count_window":
            out[key] = types_pb2.CountWindow(calls=value)
        elif key == "time_window":
            secs, buckets = value
            out[key] = types_pb2.TimeWindow(duration=duration(secs), buckets=buckets)
        elif key in _FLAGS:
            out[key] = bool(value)
        else:
            out[key] = int(value)
    return types_pb2.BreakerSpec(**out)
