// node tests-interop/bench/deflate.mjs PORT PID N RATE SECONDS: N ws subscribers (the ws
// package offers permessage-deflate), API publications at RATE/s of a
// 256-byte JSON text for SECONDS; prints server CPU per delivery.
import WebSocket from 'ws';
import { readFileSync } from 'fs';
const [port, pid, n, rate, seconds] = process.argv.slice(2).map(Number);
const url = `ws://127.0.0.1:${port}/connection/websocket`;
const cpu = () => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
let delivered = 0, compressed = 0;
const open = () => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.on('error', reject);
  ws.on('open', () => {
    if (ws.extensions.includes('permessage-deflate')) compressed++;
    ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"z"}}');
  });
  let ready = false;
  ws.on('message', (data) => {
    const text = data.toString();
    if (!ready && text.includes('"id":2')) { ready = true; resolve(ws); }
    if (text === '{}') { ws.send('{}'); return; }
    for (const line of text.split('\n')) if (line.includes('"pub"')) delivered++;
  });
});
const socks = [];
for (let i = 0; i < n; i += 100) socks.push(...await Promise.all(Array.from({ length: Math.min(100, n - i) }, open)));
const text = 'the quick brown fox jumps over the lazy dog; '.repeat(6).slice(0, 256);
const c0 = cpu(); const t0 = Date.now();
let sent = 0;
while (Date.now() - t0 < seconds * 1000) {
  const due = Math.floor(((Date.now() - t0) / 1000) * rate);
  while (sent < due) {
    sent++;
    fetch(`http://127.0.0.1:${port}/api/publish`, { method: 'POST', body: JSON.stringify({ channel: 'z', data: { text, n: sent } }) });
  }
  await new Promise((r) => setTimeout(r, 5));
}
await new Promise((r) => setTimeout(r, 1000)); // let the last deliveries land before the count
const c1 = cpu();
console.log(JSON.stringify({ n, compressed, sent, delivered, expected: sent * n, server_cpu_s: +(c1 - c0).toFixed(2), us_per_delivery: +(((c1 - c0) * 1e6) / delivered).toFixed(2) }));
process.exit(0);
