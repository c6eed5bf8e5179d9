"""A real centrifuge-python subscriber (tests-interop/.venv) for
scripts/faults.sh: connects to WS_URL with TOKEN, subscribes to CHANNEL
recoverably, and prints one JSON line per event on stdout, flushed:

  {"event": "subscribed", "recovered": bool, "was_recovering": bool, "offset": N, "epoch": "..."}
  {"event": "subscribing", "code": N, "reason": "..."}    (2500: the server lost state)
  {"event": "error", "error": "..."}                       (a refused resubscribe, e.g. 100)
  {"event": "pub", "offset": N, "data": ...}

The SDK does what it does for any user: on an unsubscribe push 2500 it
resubscribes, recovering from the last offset it saw, and retries with
backoff while the answer is a temporary error. Runs until killed.

    python client.py WS_URL TOKEN CHANNEL
"""

import asyncio
import json
import sys

from centrifuge import Client, SubscriptionEventHandler


def say(**event):
    print(json.dumps(event), flush=True)


class Events(SubscriptionEventHandler):
    async def on_subscribing(self, ctx):
        say(event="subscribing", code=ctx.code, reason=ctx.reason)

    async def on_subscribed(self, ctx):
        pos = ctx.stream_position
        say(
            event="subscribed",
            recovered=ctx.recovered,
            was_recovering=ctx.was_recovering,
            offset=pos.offset if pos else None,
            epoch=pos.epoch if pos else None,
        )

    async def on_unsubscribed(self, ctx):
        say(event="unsubscribed", code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx):
        say(event="error", error=str(ctx.error))

    async def on_publication(self, ctx):
        say(event="pub", offset=ctx.pub.offset, data=ctx.pub.data)


async def main(url, token, channel):
    client = Client(url, token=token, max_reconnect_delay=2.0, proxy=None)
    sub = client.new_subscription(channel, events=Events(), recoverable=True, max_resubscribe_delay=2.0)
    await client.connect()
    await sub.subscribe()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
