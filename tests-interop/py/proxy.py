"""centrifuge-python against a crier whose proxies point at a backend the
Rust test runs (tests/server/proxy.rs): connect without a token through the
connect proxy into the backend's server-side channel, a publication there,
and RPC results and errors.

    python proxy.py WS_URL API_URL API_KEY

Exits 0 on success; prints the reason and exits 1 on failure.
"""

import asyncio
import sys

from cent import AsyncClient, PublishRequest
from centrifuge import Client, ClientEventHandler, ReplyError

step = "start"


class Failure(Exception):
    pass


def check(ok, reason):
    if not ok:
        raise Failure(reason)


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = asyncio.Queue()
        self.subscribed = asyncio.Queue()
        self.publications = asyncio.Queue()

    async def on_connected(self, ctx):
        self.connected.put_nowait(ctx)

    async def on_subscribed(self, ctx):
        self.subscribed.put_nowait(ctx)

    async def on_publication(self, ctx):
        self.publications.put_nowait(ctx)


async def main(ws_url, api_url, api_key):
    global step
    events = Events()
    step = "connect without a token"
    client = Client(ws_url, events=events, data={"user": "py-proxied"}, proxy=None)
    await client.connect()
    ctx = await events.connected.get()
    check(ctx.data == {"hello": "from backend", "x_auth": ""}, f"connect data: {ctx}")
    sub = await events.subscribed.get()
    check(sub.channel == "news", f"server-side subscription: {sub}")

    step = "a publication in the server-side channel"
    async with AsyncClient(api_url, api_key) as api:
        await api.publish(PublishRequest(channel="news", data={"n": 2}))
    p = await events.publications.get()
    check(p.channel == "news" and p.pub.data == {"n": 2}, f"got {p}")

    step = "rpc"
    r = await client.rpc("sum", {"a": 20, "b": 22})
    check(r.data == {"sum": 42}, f"rpc result: {r}")
    try:
        await client.rpc("nope", {})
        raise Failure("rpc to an unknown method succeeded")
    except ReplyError as e:
        check(e.code == 1404, f"rpc error: {e}")
    await client.disconnect()
    print("ok: connect and rpc through the proxies")


def run():
    if len(sys.argv) != 4:
        sys.exit("usage: python proxy.py WS_URL API_URL API_KEY")
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), timeout=20))
    except asyncio.TimeoutError:
        sys.exit(f'FAIL during "{step}": timed out after 20 s')
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        sys.exit(f'FAIL during "{step}": {type(e).__name__}: {e}')


if __name__ == "__main__":
    run()
