"""centrifuge-python and cent over TLS (tests/server/tls.rs): the SDK
connects over wss:// trusting only the test CA, subscribes, and receives a
publication that cent sends to the API over https://.

    python tls.py WSS_URL TOKEN HTTPS_API_URL API_KEY CA_FILE

Exits 0 on success; prints the reason and exits 1 on failure.
"""

import asyncio
import ssl
import sys

import aiohttp
from cent import AsyncClient, PublishRequest
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

step = "start"


class Failure(Exception):
    pass


def check(ok, reason):
    if not ok:
        raise Failure(reason)


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = asyncio.Queue()

    async def on_connected(self, ctx):
        self.connected.put_nowait(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self):
        self.subscribed = asyncio.Queue()
        self.publications = asyncio.Queue()

    async def on_subscribed(self, ctx):
        self.subscribed.put_nowait(ctx)

    async def on_publication(self, ctx):
        self.publications.put_nowait(ctx)


async def main(wss_url, token, api_url, api_key, ca_file):
    global step
    # Only the test CA: no system roots.
    trust = ssl.create_default_context(cafile=ca_file)
    step = "connect over wss://"
    events = Events()
    client = Client(wss_url, events=events, token=token, ssl_context=trust, proxy=None)
    await client.connect()
    await events.connected.get()

    step = "subscribe"
    sub_events = SubEvents()
    sub = client.new_subscription("news", events=sub_events)
    await sub.subscribe()
    await sub_events.subscribed.get()

    step = "publish with cent over https://"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
        async with AsyncClient(api_url, api_key, session=session) as api:
            result = await api.publish(PublishRequest(channel="news", data={"over": "tls"}))
    check(result.offset >= 1, f"publish result: {result}")
    p = await sub_events.publications.get()
    check(p.pub.data == {"over": "tls"}, f"got {p}")
    await client.disconnect()
    print("ok: wss:// and https:// with the test CA")


def run():
    if len(sys.argv) != 6:
        sys.exit("usage: python tls.py WSS_URL TOKEN HTTPS_API_URL API_KEY CA_FILE")
    try:
        asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), timeout=20))
    except asyncio.TimeoutError:
        sys.exit(f'FAIL during "{step}": timed out after 20 s')
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        sys.exit(f'FAIL during "{step}": {type(e).__name__}: {e}')


if __name__ == "__main__":
    run()
