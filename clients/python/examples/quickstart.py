"""Guard a call with a cbd breaker: the Python quickstart, run by check.sh as is."""

import os

from cbd_client import BreakerOpen, Client

with Client(os.environ.get("CBD_ENDPOINT", "127.0.0.1:7411")) as client:
    client.admin.put_breaker("payments.charge", consecutive_failures=2, open_duration=30)
    payments = client.breaker("payments.charge")

    @payments  # Acquire before each call; Report SUCCESS, or FAILURE if it raises
    def charge(card):
        if card == "declined":
            raise TimeoutError("payment provider timed out")
        return f"charged {card}"

    for card in ["4242", "declined", "declined", "4242"]:
        try:
            print(charge(card))
        except BreakerOpen as e:
            print(f"rejected, retry in {e.retry_after:.0f} s")
        except TimeoutError as e:
            print(f"failed: {e}")
