// A spec-following EventSource (the npm `eventsource` package, which
// implements the WHATWG EventSource a browser has) against crier's
// /connection/uni_sse: connect with a token in `cf_connect`, receive the
// connect push, then publications made through the server API, in order.
//
//   node sse.mjs WS_URL TOKEN API_URL API_KEY USER
//
// Exits 0 on success; prints the reason and exits 1 on failure.
import { EventSource } from 'eventsource';

const [wsUrl, token, apiUrl, apiKey] = process.argv.slice(2);
if (!apiKey) {
  console.error('usage: node sse.mjs WS_URL TOKEN API_URL API_KEY USER');
  process.exit(2);
}
const channel = 'chat:sse';
const base = wsUrl.replace(/^ws/, 'http').replace(/\/connection\/websocket$/, '');
let step = 'open';
function fail(reason) {
  console.error(`FAIL during "${step}": ${reason}`);
  process.exit(1);
}
setTimeout(() => fail('timed out after 20 s'), 20_000);

async function publish(data) {
  const res = await fetch(`${apiUrl}/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const text = await res.text();
  if (!res.ok || JSON.parse(text).error) fail(`API publish: HTTP ${res.status}: ${text}`);
}

const connect = encodeURIComponent(JSON.stringify({ token, subs: { [channel]: {} } }));
const source = new EventSource(`${base}/connection/uni_sse?cf_connect=${connect}`);
const received = [];
source.onerror = (e) => fail(`EventSource error: ${e.message ?? e.type}`);
source.onmessage = async (event) => {
  const push = JSON.parse(event.data);
  if (Object.keys(push).length === 0) return; // ping
  if (step === 'open') {
    if (!push.connect?.client) fail(`first message is not a connect push: ${event.data}`);
    if (!push.connect.subs?.[channel]) fail(`not subscribed to ${channel}: ${event.data}`);
    step = 'publications';
    await publish({ n: 1 });
    await publish({ n: 2 });
    return;
  }
  if (push.channel !== channel || !push.pub) fail(`unexpected push: ${event.data}`);
  received.push(push.pub);
  if (received.length === 2) {
    const ns = received.map((p) => p.data.n).join(',');
    const offsets = received.map((p) => p.offset).join(',');
    if (ns !== '1,2' || offsets !== '1,2') fail(`got n=${ns} offsets=${offsets}`);
    console.log(`EventSource received ${received.length} publications in order`);
    source.close();
    process.exit(0);
  }
};
