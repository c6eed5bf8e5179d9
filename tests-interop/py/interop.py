"""The real centrifuge-python SDK (client side) and cent (server API side)
against a running crier server: connect with a token, a recoverable
subscription, a publication made through the API, history and presence from
both sides, then a forced reconnect whose missed publications must be
recovered exactly (in order, no gap, no duplicate).

    python interop.py WS_URL TOKEN API_URL API_KEY USER [protobuf]

With `protobuf`, the SDK speaks the protobuf protocol (binary frames) and
payloads arrive as bytes. API_URL is the API base (`http://host:port/api`); USER is the token's
subject. Exits 0 on success; prints the reason and exits 1 on failure.
CRIER_INTEROP_DEBUG=1 makes the SDK log its frames.
"""

import asyncio
import json
import logging
import os
import sys

from cent import (
    AsyncClient,
    Disconnect,
    DisconnectRequest,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
)
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

CHANNEL = "chat:interop-py"
step = "start"


class Failure(Exception):
    pass


def check(ok, reason):
    if not ok:
        raise Failure(reason)


class ClientEvents(ClientEventHandler):
    """Queues the client's events. The SDK reconnects only after
    `on_connecting` returns, so clearing `resume` keeps the client away."""

    def __init__(self):
        self.connected = asyncio.Queue()
        self.connecting = asyncio.Queue()
        self.resume = asyncio.Event()
        self.resume.set()

    async def on_connected(self, ctx):
        self.connected.put_nowait(ctx)

    async def on_connecting(self, ctx):
        self.connecting.put_nowait(ctx)
        await self.resume.wait()

    async def on_disconnected(self, ctx):
        print(f"client disconnected: {ctx}", file=sys.stderr)

    async def on_error(self, ctx):
        print(f"client error event: {ctx}", file=sys.stderr)


class SubscriptionEvents(SubscriptionEventHandler):
    def __init__(self):
        self.subscribed = asyncio.Queue()
        self.publications = asyncio.Queue()

    async def on_subscribed(self, ctx):
        self.subscribed.put_nowait(ctx)

    async def on_publication(self, ctx):
        self.publications.put_nowait(ctx.pub)

    async def on_unsubscribed(self, ctx):
        print(f"unsubscribed: {ctx}", file=sys.stderr)

    async def on_error(self, ctx):
        print(f"subscription error event: {ctx}", file=sys.stderr)


def decoded(data):
    """A payload as the application sees it: JSON clients get it decoded,
    protobuf clients get the bytes."""
    return json.loads(data) if isinstance(data, bytes) else data


async def main(ws_url, token, api_url, api_key, user, protocol="json"):
    global step
    protobuf = protocol == "protobuf"
    events, sub_events = ClientEvents(), SubscriptionEvents()
    client = Client(
        ws_url, events=events, token=token, name="crier-interop-py", proxy=None, use_protobuf=protobuf
    )
    sub = client.new_subscription(CHANNEL, events=sub_events, recoverable=True)
    async with AsyncClient(api_url, api_key) as api:

        async def publish(n):
            return await api.publish(PublishRequest(channel=CHANNEL, data={"n": n}))

        step = "connect and subscribe"
        await client.connect()
        client_id = (await events.connected.get()).client
        await events.connecting.get()  # "connect called"
        await sub.subscribe()
        s1 = await sub_events.subscribed.get()
        check(s1.recoverable, f"subscription is not recoverable: {s1}")
        check(not s1.was_recovering, f"first subscribe claims recovery: {s1}")
        epoch = s1.stream_position.epoch
        print(f"connected as {client_id}, subscribed at {s1.stream_position}")

        step = "publication through the server API"
        pub1 = await publish(1)
        check(pub1.epoch == epoch, f"API publish {pub1} differs from epoch {epoch}")
        p1 = await sub_events.publications.get()
        check(isinstance(p1.data, bytes) == protobuf, f"payload type for {protocol}: {p1}")
        check(p1.offset == pub1.offset and decoded(p1.data) == {"n": 1}, f"got {p1} for {pub1}")

        step = "history"
        h = await sub.history(limit=10)
        check(h.epoch == epoch and h.offset == pub1.offset, f"SDK history position: {h}")
        check(
            [(p.offset, decoded(p.data)) for p in h.publications] == [(pub1.offset, {"n": 1})],
            f"SDK history publications: {h.publications}",
        )
        h = await api.history(HistoryRequest(channel=CHANNEL, limit=10))
        check(h.epoch == epoch and h.offset == pub1.offset, f"API history position: {h}")
        check(
            [(p.offset, p.data) for p in h.publications] == [(pub1.offset, {"n": 1})],
            f"API history publications: {h.publications}",
        )

        step = "presence"
        presence = await sub.presence()
        info = presence.clients.get(client_id)
        check(info and info.user == user, f"SDK presence lacks {client_id} ({user}): {presence}")
        stats = await sub.presence_stats()
        check((stats.num_clients, stats.num_users) == (1, 1), f"SDK presence stats: {stats}")
        presence = await api.presence(PresenceRequest(channel=CHANNEL))
        info = presence.presence.get(client_id)
        check(info and info.user == user, f"API presence lacks {client_id} ({user}): {presence}")
        stats = await api.presence_stats(PresenceStatsRequest(channel=CHANNEL))
        check((stats.num_clients, stats.num_users) == (1, 1), f"API presence stats: {stats}")

        step = "forced reconnect"
        events.resume.clear()
        await api.disconnect(
            DisconnectRequest(user=user, disconnect=Disconnect(code=3011, reason="force reconnect"))
        )
        why = await events.connecting.get()
        check(why.code == 3011, f"reconnecting for {why}, expected code 3011")

        step = "publish while the client is away"
        missed = [(await publish(n)).offset for n in (2, 3, 4)]
        events.resume.set()

        step = "recovery"
        s2 = await sub_events.subscribed.get()
        check(s2.was_recovering and s2.recovered, f"not recovered: {s2}")
        check(s2.stream_position.epoch == epoch, f"epoch changed: {s2}")
        # A live publication after the recovered ones: a duplicate or a stray
        # publication would arrive before it.
        last = await publish(5)
        got = [await sub_events.publications.get() for _ in range(4)]
        want = [*missed, last.offset]
        check(
            [(p.offset, decoded(p.data)) for p in got] == [(o, {"n": n}) for o, n in zip(want, range(2, 6))],
            f"expected offsets {want} with n = 2..5, got {[(p.offset, p.data) for p in got]}",
        )
        check(missed == [pub1.offset + i for i in (1, 2, 3)], f"API offsets {missed} not consecutive")

    await client.disconnect()
    print(f"ok ({protocol}): recovered offsets {missed} after a forced reconnect")


def run():
    if len(sys.argv) not in (6, 7) or sys.argv[6:] not in ([], ["protobuf"]):
        sys.exit("usage: python interop.py WS_URL TOKEN API_URL API_KEY USER [protobuf]")
    if os.environ.get("CRIER_INTEROP_DEBUG") == "1":
        logging.basicConfig(level=logging.DEBUG)
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), timeout=20))
    except asyncio.TimeoutError:
        sys.exit(f'FAIL during "{step}": timed out after 20 s')
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        sys.exit(f'FAIL during "{step}": {type(e).__name__}: {e}')


if __name__ == "__main__":
    run()
