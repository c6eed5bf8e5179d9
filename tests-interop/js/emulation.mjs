// centrifuge-js over the bidirectional emulation transports, against a
// cluster: the stream (HTTP streaming or SSE) on node A, the client's
// commands POSTed to node B's /emulation (B hands them to A through the
// engine: no sticky sessions), publications through node C's API. Connect
// with a token, a recoverable subscription, API and client publications,
// history, presence, an RPC error, then a forced reconnect whose missed
// publications must be recovered exactly.
//
//   node emulation.mjs STREAM_BASE EMULATION_URL TOKEN API_URL API_KEY USER TRANSPORT FORMAT
//
// STREAM_BASE is node A's `http://host:port`; TRANSPORT is http_stream or
// sse; FORMAT json or protobuf (protobuf only over http_stream). Exits 0
// on success; prints the reason and exits 1 on failure.
import { api, check, fail, next, show, state } from './lib.mjs';
import { Centrifuge as JsonCentrifuge } from 'centrifuge';
import { Centrifuge as ProtobufCentrifuge } from 'centrifuge/build/protobuf';
import { EventSource } from 'eventsource';

const [streamBase, emulationUrl, token, apiUrl, apiKey, user, transport, format] = process.argv.slice(2);
if (!format) {
  console.error('usage: node emulation.mjs STREAM_BASE EMULATION_URL TOKEN API_URL API_KEY USER TRANSPORT FORMAT');
  process.exit(2);
}
const channel = `chat:emulation-${transport}-${format}`;

const protobuf = format === 'protobuf';
const encode = (v) => (protobuf ? new TextEncoder().encode(JSON.stringify(v)) : v);
const decode = (d) => (protobuf ? JSON.parse(new TextDecoder().decode(d)) : d);

// Every emulation POST the SDK makes, with its answer.
const posts = [];
const recordingFetch = async (url, options) => {
  const res = await fetch(url, options);
  if (String(url) === emulationUrl) posts.push(res.status);
  return res;
};

let gate = Promise.resolve(null);
const Centrifuge = protobuf ? ProtobufCentrifuge : JsonCentrifuge;
const client = new Centrifuge([{ transport, endpoint: `${streamBase}/connection/${transport}` }], {
  token,
  emulationEndpoint: emulationUrl,
  fetch: recordingFetch,
  readableStream: ReadableStream,
  eventsource: EventSource,
  getData: () => gate,
  minReconnectDelay: 50,
  debug: process.env.CRIER_INTEROP_DEBUG === '1',
});
client.on('error', (ctx) => console.log('client error event:', show(ctx)));
const gone = (ctx) => fail(`client disconnected for good: ${show(ctx)}`);
client.on('disconnected', gone);

const sub = client.newSubscription(channel, { recoverable: true });
const received = [];
sub.on('publication', (ctx) => received.push(ctx));
sub.on('unsubscribed', (ctx) => fail(`unsubscribed: ${show(ctx)}`));
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

state.step = `connect over ${transport} (${format}) and subscribe through /emulation`;
const connected = next(client, 'connected');
const firstSubscribe = next(sub, 'subscribed');
sub.subscribe();
client.connect();
const ctx = await connected;
check(ctx.transport === transport, `connected over ${ctx.transport}`);
const s1 = await firstSubscribe;
check(s1.recoverable === true, `subscription is not recoverable: ${show(s1)}`);
const epoch = s1.streamPosition?.epoch;
check(posts.length > 0 && posts.every((s) => s === 204), `emulation POSTs answered ${show(posts)}`);

state.step = 'publication through another node';
const pub1 = await api(apiUrl, apiKey, 'publish', { channel, data: { n: 1 } });
const [p1] = await publications(1);
check(p1.offset === pub1.offset && decode(p1.data).n === 1, `got ${show(p1)} for ${show(pub1)}`);

state.step = 'publication from the client';
await sub.publish(encode({ n: 2 }));
const [, p2] = await publications(2);
check(decode(p2.data).n === 2 && p2.info?.user === user, `got ${show(p2)}`);

state.step = 'history and presence';
const h = await sub.history({ limit: 10 });
check(h.epoch === epoch && h.publications.length === 2, `history: ${show(h)}`);
const presence = await sub.presence();
check(presence.clients[ctx.client]?.user === user, `presence: ${show(presence)}`);

state.step = 'an RPC error keeps its code';
try {
  await client.rpc('nothing', encode({}));
  fail('rpc succeeded');
} catch (e) {
  check(e.code === 104, `rpc error: ${show(e)}`);
}

state.step = 'forced reconnect';
let release;
gate = new Promise((resolve) => (release = resolve));
const lost = next(client, 'connecting');
const secondSubscribe = next(sub, 'subscribed');
await api(apiUrl, apiKey, 'disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
const why = await lost;
check(why.code === 3011, `reconnecting for ${show(why)}, expected code 3011`);

state.step = 'publish while the client is away';
const missed = [];
for (const n of [3, 4]) missed.push((await api(apiUrl, apiKey, 'publish', { channel, data: { n } })).offset);
release(null);

state.step = 'recovery';
const s2 = await secondSubscribe;
check(s2.wasRecovering && s2.recovered, `not recovered: ${show(s2)}`);
const last = await api(apiUrl, apiKey, 'publish', { channel, data: { n: 5 } });
const all = await publications(5);
const want = [pub1.offset, p2.offset, ...missed, last.offset];
check(
  show(all.map((p) => p.offset)) === show(want) && all.every((p, i) => decode(p.data).n === i + 1),
  `expected offsets ${show(want)}, got ${show(all.map((p) => [p.offset, p.data]))}`,
);

client.off('disconnected', gone);
client.disconnect();
console.log(`ok: ${transport} (${format}), ${posts.length} emulation POSTs through another node, recovered ${show(missed)}`);
process.exit(0);
