"""Guard a call with a cbd breaker: the README's Python quickstart, run by CI as is."""

import os

import grpc
from cbd.v1 import admin_pb2, admin_pb2_grpc, breakers_pb2, breakers_pb2_grpc, types_pb2
from cbd_breaker import BreakerOpen, breaker
from google.protobuf import duration_pb2

channel = grpc.insecure_channel(os.environ.get("CBD_ENDPOINT", "127.0.0.1:7411"))
admin = admin_pb2_grpc.AdminStub(channel)
stub = breakers_pb2_grpc.BreakersStub(channel)

# Create the breaker (an operator would run `cbctl put payments.charge ...`).
admin.PutBreaker(admin_pb2.PutBreakerRequest(
    name="payments.charge",
    spec=types_pb2.BreakerSpec(consecutive_failures=2,
                               open_duration=duration_pb2.Duration(seconds=30)),
))


def charge(card):
    if card == "declined":
        raise RuntimeError("payment provider timed out")
    return f"charged {card}"


for card in ["4242", "declined", "declined", "4242"]:
    try:
        with breaker(stub, "payments.charge"):  # Acquire; Report SUCCESS on exit,
            print(charge(card))                 # FAILURE if this raises (re-raised)
    except BreakerOpen as e:
        state = types_pb2.State.Name(e.state)
        print(f"payments are {state}, retry in {e.retry_after.total_seconds():.0f} s")
    except RuntimeError as e:
        print(f"failed: {e}")

# Follow changes from revision 1 on (after a disconnect, resume at last.revision + 1:
# nothing is lost or repeated).
request = breakers_pb2.WatchRequest(
    filter=breakers_pb2.WatchFilter(prefix="payments."), start_revision=1)
for msg in stub.Watch(request):
    if msg.HasField("event"):
        e = msg.event
        print(e.revision, e.name, types_pb2.State.Name(e.state), e.reason)
        if e.state == types_pb2.STATE_OPEN:
            break
