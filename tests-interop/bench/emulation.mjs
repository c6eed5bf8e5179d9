// node tests-interop/bench/emulation.mjs PORT PID N RATE SECONDS TRANSPORT
//
// N subscribers on one channel over TRANSPORT (http_stream: fetch streams
// with commands POSTed to /emulation; websocket: the `ws` package, for
// reference), API publications of a 64-byte payload at RATE/s for SECONDS;
// prints deliveries/s and the server's CPU per delivery (/proc/PID/stat).
import WebSocket from 'ws';
import { readFileSync } from 'fs';

const [port, pid, n, rate, seconds] = process.argv.slice(2, 7).map(Number);
const transport = process.argv[7] ?? 'http_stream';
const base = `http://127.0.0.1:${port}`;
const cpu = () => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
let delivered = 0;
const count = (text) => {
  for (const line of text.split('\n')) if (line.includes('"pub"')) delivered++;
};

async function streamSubscriber() {
  const res = await fetch(`${base}/connection/http_stream`, { method: 'POST', body: '{"id":1,"connect":{}}' });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let session = null;
  let subscribed;
  const ready = new Promise((r) => (subscribed = r));
  (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      const cut = buf.lastIndexOf('\n');
      if (cut < 0) continue;
      const text = buf.slice(0, cut);
      buf = buf.slice(cut + 1);
      if (!session) {
        const connect = JSON.parse(text.split('\n')[0]).connect;
        session = connect;
        const data = '{"id":2,"subscribe":{"channel":"e"}}';
        await fetch(`${base}/emulation`, { method: 'POST', body: JSON.stringify({ session: connect.session, node: connect.node, data }) });
        continue;
      }
      if (text.includes('"id":2')) subscribed();
      if (text.split('\n').includes('{}')) {
        fetch(`${base}/emulation`, { method: 'POST', body: JSON.stringify({ session: session.session, node: session.node, data: '{}' }) });
      }
      count(text);
    }
  })();
  await ready;
}

function wsSubscriber() {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/connection/websocket`, { perMessageDeflate: false });
    ws.on('open', () => ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"e"}}'));
    let ready = false;
    ws.on('message', (data) => {
      const text = data.toString();
      if (!ready && text.includes('"id":2')) {
        ready = true;
        resolve();
      }
      if (text === '{}') ws.send('{}');
      count(text);
    });
  });
}

const open = transport === 'websocket' ? wsSubscriber : streamSubscriber;
for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: Math.min(50, n - i) }, open));
const c0 = cpu();
const t0 = Date.now();
let sent = 0;
while (Date.now() - t0 < seconds * 1000) {
  const due = Math.floor(((Date.now() - t0) / 1000) * rate);
  const batch = [];
  while (sent < due) {
    sent++;
    batch.push(fetch(`${base}/api/publish`, { method: 'POST', body: JSON.stringify({ channel: 'e', data: { n: sent, pad: 'x'.repeat(40) } }) }));
  }
  await Promise.all(batch);
  await new Promise((r) => setTimeout(r, 2));
}
const elapsed = (Date.now() - t0) / 1000;
await new Promise((r) => setTimeout(r, 1000)); // the last deliveries land before the count
const c1 = cpu();
console.log(JSON.stringify({
  transport, n, rate, sent, delivered, expected: sent * n,
  deliveries_per_second: Math.round(delivered / elapsed),
  server_cpu_s: +(c1 - c0).toFixed(2),
  us_per_delivery: +(((c1 - c0) * 1e6) / delivered).toFixed(2),
}));
process.exit(0);
