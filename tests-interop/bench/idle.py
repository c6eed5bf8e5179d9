"""Opens N subscribed WebSocket connections to crier (python websockets,
which offers permessage-deflate), then reads the server's RSS.
usage: tests-interop/.venv/bin/python tests-interop/bench/idle.py PORT PID N"""
import asyncio, sys, json
import websockets

async def one(url, i, ready):
    ws = await websockets.connect(url, max_size=2**20)
    await ws.send(json.dumps({"id": 1, "connect": {}}) + "\n" + json.dumps({"id": 2, "subscribe": {"channel": "idle"}}))
    got = 0
    while got < 2:
        msg = await ws.recv()
        got += sum(1 for l in msg.split("\n") if '"id":' in l)
    ready.append(ws.protocol.extensions)
    return ws

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

async def main(port, pid, n):
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    before = rss(pid)
    ready = []
    conns = []
    for start in range(0, n, 200):
        conns += await asyncio.gather(*(one(url, i, ready) for i in range(start, min(n, start + 200))))
    await asyncio.sleep(1)  # not a synchronisation: lets the allocator settle before the reading
    after = rss(pid)
    agreed = sum(1 for e in ready if e)
    print(json.dumps({"n": n, "deflate_agreed": agreed, "rss_before": before, "rss_after": after, "per_conn": (after - before) / n}))
    for ws in conns:
        await ws.close()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
