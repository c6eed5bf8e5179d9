// The real centrifuge-js SDK against a running crier server: connect with a
// token, a recoverable subscription, a publication made through the server
// API, history, presence, then a forced reconnect whose missed publications
// must be recovered exactly (in order, no gap, no duplicate).
//
//   node interop.mjs WS_URL TOKEN API_URL API_KEY USER
//
// API_URL is the API base (`http://host:port/api`); USER is the token's
// subject. Exits 0 on success; prints the reason and exits 1 on failure.
// CRIER_INTEROP_DEBUG=1 makes the SDK log its frames.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws'; // Node 20 has no global WebSocket

const [wsUrl, token, apiUrl, apiKey, user] = process.argv.slice(2);
if (!user) {
  console.error('usage: node interop.mjs WS_URL TOKEN API_URL API_KEY USER');
  process.exit(2);
}
const channel = 'chat:interop-js';

let step = 'start';
function fail(reason) {
  console.error(`FAIL during "${step}": ${reason}`);
  process.exit(1);
}
function check(ok, reason) {
  if (!ok) fail(reason);
}
const show = (v) => JSON.stringify(v);
setTimeout(() => fail('timed out after 20 s'), 20_000);

async function api(method, body) {
  const res = await fetch(`${apiUrl}/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  check(res.ok, `API ${method}: HTTP ${res.status}: ${text}`);
  const reply = JSON.parse(text);
  check(!reply.error, `API ${method}: ${text}`);
  return reply.result ?? {};
}

const next = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));

// The SDK awaits `getData` before every (re)connect: while `gate` is pending,
// the client stays away, so publications made meanwhile can only come back
// through recovery.
let gate = Promise.resolve(null);
const client = new Centrifuge(wsUrl, {
  token,
  websocket: WebSocket,
  name: 'crier-interop-js',
  getData: () => gate,
  minReconnectDelay: 50,
  debug: process.env.CRIER_INTEROP_DEBUG === '1', // logs every frame
});
client.on('error', (ctx) => console.log('client error event:', show(ctx)));
const gone = (ctx) => fail(`client disconnected for good: ${show(ctx)}`);
client.on('disconnected', gone);

const sub = client.newSubscription(channel, { recoverable: true });
const received = []; // every publication event, in arrival order
sub.on('publication', (ctx) => received.push(ctx));
sub.on('error', (ctx) => console.log('subscription error event:', show(ctx)));
sub.on('unsubscribed', (ctx) => fail(`unsubscribed: ${show(ctx)}`));

// Resolves once `n` publications have arrived.
function publications(n) {
  return new Promise((resolve) => {
    const check = () => {
      if (received.length < n) return;
      sub.off('publication', check);
      resolve(received.slice(0, n));
    };
    sub.on('publication', check);
    check();
  });
}

step = 'connect and subscribe';
const connected = next(client, 'connected');
const firstSubscribe = next(sub, 'subscribed');
sub.subscribe();
client.connect();
const clientId = (await connected).client;
const s1 = await firstSubscribe;
check(s1.recoverable === true, `subscription is not recoverable: ${show(s1)}`);
check(!s1.wasRecovering, `first subscribe claims recovery: ${show(s1)}`);
const epoch = s1.streamPosition?.epoch;
check(epoch, `no stream position in the subscribe result: ${show(s1)}`);
console.log(`connected as ${clientId}, subscribed at ${show(s1.streamPosition)}`);

step = 'publication through the server API';
const pub1 = await api('publish', { channel, data: { n: 1 } });
check(pub1.epoch === epoch, `API publish epoch ${show(pub1)} differs from ${epoch}`);
const [p1] = await publications(1);
check(p1.offset === pub1.offset && p1.data?.n === 1, `got ${show(p1)} for ${show(pub1)}`);

step = 'history';
const h = await sub.history({ limit: 10 });
check(h.epoch === epoch && h.offset === pub1.offset, `history position: ${show(h)}`);
check(
  h.publications.length === 1 &&
    h.publications[0].offset === pub1.offset &&
    h.publications[0].data?.n === 1,
  `history publications: ${show(h.publications)}`,
);

step = 'presence';
const presence = await sub.presence();
check(presence.clients[clientId]?.user === user, `${clientId} (${user}) absent: ${show(presence)}`);
const stats = await sub.presenceStats();
check(stats.numClients === 1 && stats.numUsers === 1, `presence stats: ${show(stats)}`);

step = 'forced reconnect';
let release;
gate = new Promise((resolve) => (release = resolve));
const lost = next(client, 'connecting');
const secondSubscribe = next(sub, 'subscribed');
await api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
const why = await lost;
check(why.code === 3011, `reconnecting for ${show(why)}, expected code 3011`);

step = 'publish while the client is away';
const missed = [];
for (const n of [2, 3, 4]) missed.push((await api('publish', { channel, data: { n } })).offset);
release(null);

step = 'recovery';
const s2 = await secondSubscribe;
check(s2.wasRecovering && s2.recovered, `not recovered: ${show(s2)}`);
check(s2.streamPosition?.epoch === epoch, `epoch changed: ${show(s2)}`);
// A live publication after the recovered ones: a duplicate or a stray
// publication would arrive before it.
const last = await api('publish', { channel, data: { n: 5 } });
const all = await publications(5);
const want = [pub1.offset, ...missed, last.offset];
check(
  show(all.map((p) => p.offset)) === show(want) && all.every((p, i) => p.data?.n === i + 1),
  `expected offsets ${show(want)} with n = 1..5, got ${show(all.map((p) => [p.offset, p.data]))}`,
);
check(
  missed.every((offset, i) => offset === pub1.offset + 1 + i),
  `API offsets are not consecutive: ${show(want)}`,
);

client.off('disconnected', gone);
client.disconnect();
console.log(`ok: recovered offsets ${show(missed)} after a forced reconnect`);
process.exit(0);
