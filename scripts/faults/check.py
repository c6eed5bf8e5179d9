#!/usr/bin/env python3
"""One partition scenario of scripts/faults.sh (Python 3 standard library;
the subscribers are the real centrifuge-python SDK, scripts/faults/client.py).

Node A and node B share one broker; A reaches it over a link this scenario
cuts (--cut) and restores (--heal), B over another link that stays up.
A backend publishes through B's API every 100 ms throughout. One SDK
subscriber on each node. Checks, in order, each bounded:

  1. both subscribe and receive;
  2. the link is cut: A's API answers error 100 within its io_timeout (not
     hanging), and A's subscriber is told unsubscribe 2500 within
     --detect-within seconds (it stays connected; its resubscribes get the
     temporary error 100); B's subscriber keeps receiving meanwhile;
  3. the link is restored: A's subscriber resubscribes with recovered=true;
  4. publishing stops: both subscribers end at the channel's top offset,
     each having seen every offset 1..top exactly once, in order.

Writes OUT/result.json and exits 1 on the first failed check.
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request

T0 = time.monotonic()


def log(*args):
    print(f"[faults {time.monotonic() - T0:6.1f}s]", *args, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def api(base, key, method, body, timeout=10):
    req = urllib.request.Request(
        f"{base}/api/{method}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


class Subscriber:
    """An SDK subscriber in a child process; its events, timestamped."""

    def __init__(self, name, python, url, channel, out):
        self.name = name
        self.events = queue.Queue()
        self.offsets = []
        self.data = []
        self.log = []
        self.stderr = open(os.path.join(out, f"client-{name}.log"), "w")
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(
            [python, os.path.join(here, "client.py"), url, "", channel],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            e["t"] = round(time.monotonic() - T0, 2)
            self.log.append(e)
            if e["event"] == "pub":
                self.offsets.append(e["offset"])
                self.data.append(e["data"])
            self.events.put(e)
        self.events.put({"event": "exited", "t": round(time.monotonic() - T0, 2)})

    def wait(self, what, within, match):
        """Takes events until one matches; fails after `within` seconds."""
        end = time.monotonic() + within
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise Failure(f"{self.name}: {what}: not within {within} s")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if e["event"] == "exited":
                raise Failure(f"{self.name}: the SDK client exited (see client-{self.name}.log)")
            if match(e):
                return e

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--node-a", required=True, help="http://HOST:PORT of the node whose link is cut")
    p.add_argument("--node-b", required=True, help="http://HOST:PORT of the node that stays connected")
    p.add_argument("--api-key", required=True)
    p.add_argument("--cut", required=True, help="shell command that cuts A's link to the broker")
    p.add_argument("--heal", required=True, help="shell command that restores it")
    p.add_argument("--python", required=True, help="a Python with centrifuge-python")
    p.add_argument("--io-timeout", type=float, required=True)
    p.add_argument("--detect-within", type=float, default=20)
    p.add_argument("--hold", type=float, default=5, help="seconds the partition lasts after A's client was told")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    channel = args.channel
    ws = lambda base: base.replace("http://", "ws://") + "/connection/websocket"
    result = {"engine": args.engine, "checks": []}
    subs = []
    stop = threading.Event()
    published = {"ok": 0, "errors": []}

    def check(what, **figures):
        result["checks"].append({"check": what, **figures})
        log("ok:", what, figures or "")

    def publisher():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                r = api(args.node_b, args.api_key, "publish", {"channel": channel, "data": {"via": "b", "n": n}})
                if "error" in r:
                    published["errors"].append(r["error"])
                else:
                    published["ok"] += 1
            except OSError as e:
                published["errors"].append(str(e))
            stop.wait(0.1)  # the backend's pace

    status = 0
    try:
        a = Subscriber("a", args.python, ws(args.node_a), channel, args.out)
        b = Subscriber("b", args.python, ws(args.node_b), channel, args.out)
        subs = [a, b]
        for s in subs:
            s.wait("first subscribe", 20, lambda e: e["event"] == "subscribed")
        threading.Thread(target=publisher, daemon=True).start()
        for s in subs:
            for _ in range(5):
                s.wait("publications before the fault", 20, lambda e: e["event"] == "pub")
        check("both subscribers receive")

        log("cutting A's link:", args.cut)
        subprocess.run(args.cut, shell=True, check=True)
        t_cut = time.monotonic()
        started = time.monotonic()
        try:
            r = api(args.node_a, args.api_key, "publish", {"channel": channel, "data": {"via": "a"}}, timeout=30)
        except OSError as e:
            r = {"transport error": str(e)}
        took = time.monotonic() - started
        if r.get("error", {}).get("code") != 100:
            raise Failure(f"A's publish during the partition answered {r}, not error 100")
        if took > args.io_timeout + 2:
            raise Failure(f"A's publish took {took:.1f} s (io_timeout {args.io_timeout} s)")
        check("A's API answers error 100 during the partition", seconds=round(took, 2))

        e = a.wait(
            "unsubscribe 2500 after the cut",
            args.detect_within,
            lambda e: e["event"] in ("subscribing", "unsubscribed") and e.get("code") != 0,
        )
        if e["event"] != "subscribing" or e["code"] != 2500:
            raise Failure(f"A's subscriber was told {e}, not a resubscribing 2500")
        detected = time.monotonic() - t_cut
        check("A's subscriber told 2500 (insufficient state), still connected", seconds_after_cut=round(detected, 1))

        b_before = len(b.offsets)
        hold_end = time.monotonic() + args.hold
        refused = []
        while time.monotonic() < hold_end:
            try:
                e = a.events.get(timeout=max(0.01, hold_end - time.monotonic()))
            except queue.Empty:
                continue
            if e["event"] == "error":
                refused.append(e["error"])
            if e["event"] == "subscribed":
                raise Failure(f"A's subscriber resubscribed while its node is cut off: {e}")
            if e["event"] in ("exited", "unsubscribed"):
                raise Failure(f"A's subscriber: {e}")
        b_during = len(b.offsets) - b_before
        if b_during < args.hold * 10 * 0.5:
            raise Failure(f"B's subscriber got {b_during} publications in {args.hold} s of partition")
        check(
            "B's subscriber kept receiving during the partition; A's resubscribes refused",
            b_publications=b_during,
            a_refusals=len(refused),
            a_refusal_sample=refused[:1],
        )

        log("restoring A's link:", args.heal)
        subprocess.run(args.heal, shell=True, check=True)
        t_heal = time.monotonic()
        e = a.wait("resubscribed after the link came back", 60, lambda e: e["event"] == "subscribed")
        if not (e["was_recovering"] and e["recovered"]):
            raise Failure(f"A's subscriber resubscribed without recovering: {e}")
        check("A's subscriber resubscribed and recovered", seconds_after_heal=round(time.monotonic() - t_heal, 1))
        a_before = len(a.offsets)
        a.wait("live publications after recovery", 20, lambda e: e["event"] == "pub" and len(a.offsets) >= a_before + 5)

        stop.set()
        time.sleep(0.3)  # the publisher's last request
        top = api(args.node_b, args.api_key, "history", {"channel": channel, "limit": 0})["result"]["offset"]
        for s in subs:
            if not s.offsets or s.offsets[-1] < top:
                s.wait(f"offset {top}", 20, lambda e, s=s: e["event"] == "pub" and e["offset"] >= top)
        expected = list(range(1, top + 1))
        for s in subs:
            if s.offsets != expected:
                seen = set(s.offsets)
                missing = [o for o in expected if o not in seen]
                dups = sorted({o for o in s.offsets if s.offsets.count(o) > 1})
                raise Failure(
                    f"{s.name}: offsets are not 1..{top} once each in order: missing {missing[:10]}, "
                    f"duplicated {dups[:10]}, {len(s.offsets)} received"
                )
        if a.data != b.data:
            raise Failure("A's and B's subscribers saw different publications")
        via_a = sum(1 for d in a.data if d.get("via") == "a")
        check(
            "every offset exactly once, in order, on both nodes",
            top=top,
            published_by_b=published["ok"],
            publish_errors_on_b=len(published["errors"]),
            a_publish_answered_100_but_stored=via_a,
        )
    except Failure as e:
        log("FAIL:", e)
        result["failure"] = str(e)
        status = 1
    finally:
        stop.set()
        for s in subs:
            s.stop()
        result["events"] = {s.name: [e for e in s.log if e["event"] != "pub"] for s in subs}
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(result, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main())
