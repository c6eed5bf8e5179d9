// Socket.IO fan-out load client for crier's peer comparison (loopback only).
//
//   node bench.mjs --url http://127.0.0.1:PORT --subscribers S --rate R \
//       --window W --duration SECONDS --size BYTES [--server-pid PID]
//
// Opens S subscriber connections (websocket transport only, no reconnection),
// each joins room "bench0" and waits for the server's ack, then opens one
// publisher connection and publishes for SECONDS:
//   R > 0: R publications/s in total (paced by a timer, with catch-up);
//   R = 0: as fast as the window allows: a publication is in flight until all
//          live subscribers received it; the publisher stops when
//          (written*S - delivered) > W*S and resumes at half of that.
// Payload (a string, BYTES bytes): {"t":<wall ns>,"s":<seq>,"p":"xxx..."}.
// Subscribers read `t` with a prefix parse and record publish-to-delivery
// latency in microseconds into one shared log-linear histogram.
// After the duration it waits at most 2 s for stragglers and prints ONE JSON
// line on stdout. Bounded: a hard timer ends the process with an error.

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const ROOM = "bench0";
const STRAGGLER_WAIT_MS = 2000;
const CONNECT_CONCURRENCY = 100;
const CLK_TCK = 100;

// ---------------------------------------------------------------- arguments

function usage(msg) {
  if (msg) process.stderr.write(`bench.mjs: ${msg}\n`);
  process.stderr.write(
    "usage: node bench.mjs --url http://127.0.0.1:PORT --subscribers S --rate R " +
      "--window W --duration SECONDS --size BYTES [--server-pid PID] [--connect-timeout SECONDS]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: null,
    subscribers: null,
    // Defaults as in nats-bench (crates/crier-peers).
    rate: 0,
    window: 64,
    duration: 10,
    size: 64,
    serverPid: null,
    connectTimeout: null, // default: 10 s + 2 ms per subscriber
  };
  const keys = {
    "--url": "url",
    "--subscribers": "subscribers",
    "--rate": "rate",
    "--window": "window",
    "--duration": "duration",
    "--size": "size",
    "--server-pid": "serverPid",
    "--connect-timeout": "connectTimeout",
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    if (a === "-h" || a === "--help") usage();
    const k = keys[a];
    if (!k) usage(`unknown argument ${a}`);
    if (v === undefined) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      v = argv[++i];
    }
    o[k] = v;
  }
  if (!o.url) usage("--url is required");
  const num = (name, v, { int = true, min = 0 } = {}) => {
    if (v === null || v === undefined) usage(`--${name} is required`);
    const n = Number(v);
    if (!Number.isFinite(n) || (int && !Number.isInteger(n)) || n < min) {
      usage(`--${name} must be ${int ? "an integer" : "a number"} >= ${min}`);
    }
    return n;
  };
  o.subscribers = num("subscribers", o.subscribers, { min: 1 });
  o.rate = num("rate", o.rate, { int: false, min: 0 });
  o.window = num("window", o.window, { min: 0 });
  if (o.rate === 0 && o.window < 1) usage("--window must be >= 1 when --rate is 0");
  o.duration = num("duration", o.duration, { int: false, min: 0.001 });
  o.size = num("size", o.size, { min: 0 });
  o.connectTimeout =
    o.connectTimeout === null
      ? 10 + o.subscribers * 0.002
      : num("connect-timeout", o.connectTimeout, { int: false, min: 0.1 });
  o.serverPid = o.serverPid === null ? null : num("server-pid", o.serverPid, { min: 1 });

  let u;
  try {
    u = new URL(o.url);
  } catch {
    usage(`--url ${o.url} is not a URL`);
  }
  if (!["http:", "ws:"].includes(u.protocol)) usage("--url must be http:// or ws://");
  const host = u.hostname.toLowerCase();
  const loopback =
    /^127\.0\.0\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.test(host) ||
    host === "localhost" ||
    host === "[::1]" ||
    host === "::1";
  if (!loopback) usage(`refusing --url host ${u.hostname}: only 127.0.0.x, localhost or ::1`);
  o.url = u.protocol === "ws:" ? o.url.replace(/^ws:/i, "http:") : o.url;
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const S = opt.subscribers;

// ------------------------------------------------------------- hard timeout

// Connecting is bounded by --connect-timeout (default 10 s + 2 ms per
// subscriber); after that the run is bounded by duration + straggler wait +
// a 3 s margin. Never hangs.
let hardTimer = setTimeout(() => die(`hard timeout while connecting (${opt.connectTimeout} s)`), opt.connectTimeout * 1000);

function die(msg) {
  process.stderr.write(`bench.mjs: ${msg}\n`);
  process.exit(1);
}

// ------------------------------------------------------------------- clocks

// Wall clock in ns = process.hrtime.bigint() + OFF_NS (anchored to Date.now()).
const H0 = process.hrtime.bigint();
const P0 = performance.now();
const OFF_NS = BigInt(Date.now()) * 1000000n - H0;
// Cheap wall clock in us for the delivery path: performance.now() runs on the
// same monotonic clock as hrtime, so map it onto the same anchor.
const PERF_OFF_US = Number((H0 + OFF_NS) / 1000n) - P0 * 1000;
const wallNs = () => process.hrtime.bigint() + OFF_NS;
const wallUs = () => performance.now() * 1000 + PERF_OFF_US;

// ---------------------------------------------------------------- histogram

// Log-linear histogram of microseconds: exact below 2048 us, then 1024
// sub-buckets per power of two (< 0.1 % relative error), up to 2^31 us.
const SUB = 1024;
const HIST = new Float64Array(2 * SUB + 21 * SUB);
let latMax = 0;
function bucketOf(v) {
  if (v < 2 * SUB) return v;
  if (v >= 2 ** 31) v = 2 ** 31 - 1;
  const e = 31 - Math.clz32(v); // >= 11
  const shift = e - 10;
  return 2 * SUB + (e - 11) * SUB + ((v >>> shift) - SUB);
}
function valueOf(idx) {
  if (idx < 2 * SUB) return idx;
  const k = idx - 2 * SUB;
  const e = 11 + Math.floor(k / SUB);
  const m = SUB + (k % SUB);
  const shift = e - 10;
  // midpoint of the bucket [m << shift, (m + 1) << shift)
  return m * 2 ** shift + (2 ** shift - 1) / 2;
}
function record(us) {
  let v = us < 0 ? 0 : Math.round(us);
  if (v > latMax) latMax = v;
  HIST[bucketOf(v)]++;
}
function quantiles(qs) {
  let total = 0;
  for (let i = 0; i < HIST.length; i++) total += HIST[i];
  if (total === 0) return qs.map(() => null);
  const out = [];
  let qi = 0;
  let acc = 0;
  const targets = qs.map((q) => Math.max(1, Math.ceil(q * total)));
  for (let i = 0; i < HIST.length && qi < qs.length; i++) {
    acc += HIST[i];
    while (qi < qs.length && acc >= targets[qi]) {
      out.push(Math.min(Math.round(valueOf(i)), latMax));
      qi++;
    }
  }
  while (out.length < qs.length) out.push(latMax);
  return out;
}

// -------------------------------------------------------------------- /proc

function procStat(pid) {
  if (pid === null) return null;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // f[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return null;
  }
}
function procStatus(pid, key) {
  if (pid === null) return null;
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = s.match(new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ payload

const XS = "x".repeat(Math.max(0, opt.size));
function payload(seq) {
  const head = `{"t":${wallNs()},"s":${seq},"p":"`;
  const pad = opt.size - head.length - 2;
  return pad > 0 ? head + XS.slice(0, pad) + '"}' : head + '"}';
}

// Prefix parse of t: `{"t":` then digits. Drop the last three digits (ns) so
// the value (us since the epoch, ~1.7e15) stays exact in a double.
function tUsOf(data) {
  if (typeof data !== "string" || data.charCodeAt(0) !== 123 /* { */) return NaN;
  let i = 5;
  const n = data.length;
  let end = i;
  while (end < n) {
    const c = data.charCodeAt(end);
    if (c < 48 || c > 57) break;
    end++;
  }
  let v = 0;
  for (const stop = end - 3; i < stop; i++) v = v * 10 + (data.charCodeAt(i) - 48);
  return v;
}

// ------------------------------------------------------------------ clients

function connect() {
  return io(opt.url, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true, // one engine.io connection per client, no multiplexing
    perMessageDeflate: false,
    timeout: opt.connectTimeout * 1000,
  });
}

// Global counters. "Live" = subscribers not gone; the window uses live ones.
let written = 0;
let delivered = 0; // all deliveries, ever
let deliveredLive = 0; // deliveries to subscribers still connected
let live = 0;
let gone = 0;
let firstPublishMs = null; // performance.now()
let lastDeliveryMs = null;
let phase = "connect"; // connect | run | drain | done
let paused = false;
let onProgress = null; // called on deliveries while paused/draining

const subs = [];

function openSubscriber() {
  return new Promise((resolve, reject) => {
    const sock = connect();
    const st = { sock, recv: 0, gone: false, joined: false };
    let settled = false;
    sock.on("msg", (data) => {
      const now = wallUs();
      lastDeliveryMs = performance.now();
      st.recv++;
      delivered++;
      if (!st.gone) deliveredLive++;
      const t = tUsOf(data);
      if (t === t) record(now - t);
      if (onProgress !== null) onProgress();
    });
    sock.on("connect", () => {
      sock.emit("sub", ROOM, (res) => {
        if (res !== "ok") {
          if (!settled) {
            settled = true;
            reject(new Error(`join refused: ${res}`));
          }
          return;
        }
        st.joined = true;
        live++;
        subs.push(st);
        if (!settled) {
          settled = true;
          resolve(st);
        }
      });
    });
    sock.on("connect_error", (err) => {
      if (!settled) {
        settled = true;
        reject(new Error(`connect_error: ${err.message}`));
      }
    });
    sock.on("disconnect", () => {
      if (st.joined && !st.gone && phase !== "done") {
        st.gone = true;
        gone++;
        live--;
        deliveredLive -= st.recv;
        if (onProgress !== null) onProgress();
      }
      if (!settled) {
        settled = true;
        reject(new Error("disconnected before join"));
      }
    });
  });
}

async function openAll(n) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await openSubscriber();
    }
  };
  const ws = [];
  for (let i = 0; i < Math.min(CONNECT_CONCURRENCY, n); i++) ws.push(worker());
  await Promise.all(ws);
}

function openPublisher() {
  return new Promise((resolve, reject) => {
    const sock = connect();
    sock.on("connect", () => resolve(sock));
    sock.on("connect_error", (err) => reject(new Error(`publisher connect_error: ${err.message}`)));
  });
}

// --------------------------------------------------------------------- main

async function main() {
  const rssBefore = procStatus(opt.serverPid, "VmRSS");

  const c0 = performance.now();
  await openAll(S);
  const connectTook = performance.now() - c0;

  // Let the server settle its per-connection allocations before sampling RSS.
  await new Promise((r) => setTimeout(r, 200));
  const rssConnected = procStatus(opt.serverPid, "VmRSS");

  const pub = await openPublisher();
  let pubGone = false;
  pub.on("disconnect", () => {
    pubGone = true;
  });

  // From here on: duration + straggler wait + 3 s margin.
  clearTimeout(hardTimer);
  hardTimer = setTimeout(
    () => die("hard timeout during the run"),
    opt.duration * 1000 + STRAGGLER_WAIT_MS + 3000,
  );

  const publish = () => {
    const seq = written;
    written++;
    pub.emit("pub", { room: ROOM, data: payload(seq) });
  };

  phase = "run";
  const srvCpu0 = procStat(opt.serverPid);
  const cli0 = process.cpuUsage();
  firstPublishMs = performance.now();
  const endMs = firstPublishMs + opt.duration * 1000;

  await new Promise((resolveRun) => {
    const finish = () => {
      onProgress = null;
      paused = false;
      resolveRun();
    };
    if (opt.rate > 0) {
      const periodMs = 1000 / opt.rate;
      const total = Math.max(1, Math.round(opt.duration * opt.rate));
      const tick = () => {
        const now = performance.now();
        if (pubGone) return finish();
        // Catch up with the schedule (a late timer must not drop publications):
        // over the duration exactly round(duration * rate) are published.
        const due = Math.min(Math.floor((now - firstPublishMs) / periodMs) + 1, total);
        while (written < due) publish();
        if (written >= total || now >= endMs) {
          while (written < total) publish();
          return finish();
        }
        const nextAt = firstPublishMs + written * periodMs;
        setTimeout(tick, Math.max(0, Math.min(nextAt, endMs) - performance.now()));
      };
      tick();
    } else {
      const high = opt.window * S;
      const low = high / 2;
      const inflight = () => written * live - deliveredLive;
      let timer = null;
      const pump = () => {
        if (phase !== "run") return;
        if (performance.now() >= endMs || pubGone || live === 0) {
          phase = "drain";
          if (timer) clearTimeout(timer);
          return finish();
        }
        // Publish in bursts, then yield so deliveries can be processed.
        let burst = 0;
        while (inflight() <= high && burst < 64) {
          publish();
          burst++;
        }
        if (inflight() > high) {
          paused = true;
          onProgress = () => {
            if (paused && inflight() <= low) {
              paused = false;
              onProgress = null;
              setImmediate(pump);
            }
          };
        } else {
          setImmediate(pump);
        }
      };
      // The end of the duration must be noticed even while paused.
      timer = setTimeout(() => {
        if (phase === "run") {
          phase = "drain";
          finish();
        }
      }, Math.max(0, endMs - performance.now()));
      pump();
    }
  });
  phase = "drain";

  // Straggler wait: until every live subscriber has everything, at most 2 s.
  await new Promise((resolveDrain) => {
    const done = () => written * live - deliveredLive <= 0;
    if (done()) return resolveDrain();
    const t = setTimeout(() => {
      onProgress = null;
      resolveDrain();
    }, STRAGGLER_WAIT_MS);
    onProgress = () => {
      if (done()) {
        onProgress = null;
        clearTimeout(t);
        // let the last deliveries' callbacks finish first
        setImmediate(resolveDrain);
      }
    };
  });
  phase = "done";

  const endWallMs = performance.now();
  const srvCpu1 = procStat(opt.serverPid);
  const cli = process.cpuUsage(cli0);
  const peakRss = procStatus(opt.serverPid, "VmHWM");

  const expected = written * S;
  const [p50, p90, p99, p999] = quantiles([0.5, 0.9, 0.99, 0.999]);
  const srvCpu = srvCpu0 !== null && srvCpu1 !== null ? srvCpu1 - srvCpu0 : null;
  const windowS = (endWallMs - firstPublishMs) / 1000;
  const deliverySpanS = lastDeliveryMs !== null ? (lastDeliveryMs - firstPublishMs) / 1000 : null;
  const clientCpuS = (cli.user + cli.system) / 1e6;
  const round = (x, d) => (x === null ? null : Math.round(x * 10 ** d) / 10 ** d);

  const out = {
    server: "socket.io",
    subscribers: S,
    rate: opt.rate,
    window: opt.window,
    duration_s: opt.duration,
    size: opt.size,
    connect_ms: { took: round(connectTook, 1) },
    sent: written,
    deliveries_expected: expected,
    deliveries: delivered,
    loss: expected - delivered,
    subscribers_gone: gone,
    deliveries_per_second:
      deliverySpanS && deliverySpanS > 0 ? Math.round(delivered / deliverySpanS) : null,
    latency_us: delivered > 0 ? { p50, p90, p99, p99_9: p999, max: latMax } : null,
    server_pid: opt.serverPid,
    server_cpu_seconds: round(srvCpu, 2),
    server_cpu_cores: srvCpu !== null && windowS > 0 ? round(srvCpu / windowS, 2) : null,
    server_cpu_us_per_delivery: srvCpu !== null && delivered > 0 ? round((srvCpu * 1e6) / delivered, 3) : null,
    server_rss_connected_bytes: rssConnected,
    server_rss_per_connection_bytes:
      rssConnected !== null && rssBefore !== null ? Math.round((rssConnected - rssBefore) / S) : null,
    server_peak_rss_bytes: peakRss,
    client_cpu_seconds: round(clientCpuS, 2),
    client_cpu_us_per_delivery: delivered > 0 ? round((clientCpuS * 1e6) / delivered, 3) : null,
  };
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

main().catch((err) => die(err && err.message ? err.message : String(err)));
