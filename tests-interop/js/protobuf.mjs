// centrifuge-js's protobuf build (`centrifuge/build/protobuf`, binary frames,
// subprotocol `centrifuge-protobuf`) against a running crier server, with a
// JSON client of the default build on the same channel: connect with a
// token, a recoverable subscription, publications from the API and from
// the protobuf client (JSON text and raw binary), history, presence, RPC
// and permission errors, then a forced reconnect whose missed publications
// the protobuf client must recover exactly.
//
//   node protobuf.mjs WS_URL TOKEN API_URL API_KEY USER [deflate]
//
// With `deflate`, both clients' sockets must have agreed on
// permessage-deflate (the `ws` package offers it by default; the server
// must have `websocket.compression` on).
// Exits 0 on success; prints the reason and exits 1 on failure.
import { api, check, fail, next, show, state } from './lib.mjs';
import { Centrifuge as ProtobufCentrifuge } from 'centrifuge/build/protobuf';
import { Centrifuge as JsonCentrifuge } from 'centrifuge';
import WebSocket from 'ws'; // Node 20 has no global WebSocket

const [wsUrl, token, apiUrl, apiKey, user, mode] = process.argv.slice(2);
if (!user) {
  console.error('usage: node protobuf.mjs WS_URL TOKEN API_URL API_KEY USER');
  process.exit(2);
}
const channel = 'chat:interop-protobuf';

// Every socket the SDKs open, with the extensions it agreed on.
const sockets = [];
class RecordingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    sockets.push(this);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
// What a protobuf client receives is bytes; JSON ones are decoded here.
const json = (bytes) => JSON.parse(decoder.decode(bytes));

let gate = Promise.resolve(null);
const proto = new ProtobufCentrifuge(wsUrl, {
  token,
  websocket: RecordingWebSocket,
  name: 'crier-interop-protobuf',
  getData: () => gate,
  minReconnectDelay: 50,
  debug: process.env.CRIER_INTEROP_DEBUG === '1',
});
const plain = new JsonCentrifuge(wsUrl, { token, websocket: RecordingWebSocket, name: 'crier-interop-json' });
for (const [name, c] of [['protobuf', proto], ['json', plain]]) {
  c.on('error', (ctx) => console.log(`${name} client error event:`, show(ctx)));
}
const gone = (ctx) => fail(`protobuf client disconnected for good: ${show(ctx)}`);
proto.on('disconnected', gone);

const sub = proto.newSubscription(channel, { recoverable: true });
const jsonSub = plain.newSubscription(channel);
const received = []; // protobuf subscriber's publications, in order
const jsonReceived = [];
sub.on('publication', (ctx) => received.push(ctx));
jsonSub.on('publication', (ctx) => jsonReceived.push(ctx));
sub.on('unsubscribed', (ctx) => fail(`unsubscribed: ${show(ctx)}`));

function arrived(list, s, n) {
  return new Promise((resolve) => {
    const check = () => {
      if (list.length < n) return;
      s.off('publication', check);
      resolve(list.slice(0, n));
    };
    s.on('publication', check);
    check();
  });
}

state.step = 'connect and subscribe over protobuf';
const connected = next(proto, 'connected');
const firstSubscribe = next(sub, 'subscribed');
sub.subscribe();
proto.connect();
const clientId = (await connected).client;
const s1 = await firstSubscribe;
check(s1.recoverable === true, `subscription is not recoverable: ${show(s1)}`);
const epoch = s1.streamPosition?.epoch;
check(epoch, `no stream position in the subscribe result: ${show(s1)}`);

state.step = 'a JSON client on the same channel';
const jsonSubscribed = next(jsonSub, 'subscribed');
jsonSub.subscribe();
plain.connect();
await jsonSubscribed;

state.step = 'compression as agreed';
const agreed = sockets.map((s) => s.extensions);
check(
  agreed.length === 2 && agreed.every((e) => e.includes('permessage-deflate') === (mode === 'deflate')),
  `extensions agreed: ${show(agreed)} (mode ${mode ?? 'plain'})`,
);

state.step = 'publication through the server API';
const pub1 = await api(apiUrl, apiKey, 'publish', { channel, data: { n: 1 } });
const [p1] = await arrived(received, sub, 1);
check(p1.data instanceof Uint8Array, `protobuf data is not bytes: ${show(p1)}`);
check(p1.offset === pub1.offset && json(p1.data).n === 1, `got ${show(p1)} for ${show(pub1)}`);
check(p1.info === undefined || p1.info === null, `an API publication has no publisher: ${show(p1)}`);

state.step = 'publication from the protobuf client (JSON text), seen by both formats';
await sub.publish(encoder.encode(JSON.stringify({ n: 2 })));
const [, p2] = await arrived(received, sub, 2);
check(json(p2.data).n === 2 && p2.info?.client === clientId && p2.info?.user === user, `got ${show(p2)}`);
const [j1, j2] = await arrived(jsonReceived, jsonSub, 2);
check(j1.data?.n === 1 && j2.data?.n === 2 && j2.offset === p2.offset, `JSON client got ${show([j1, j2])}`);

state.step = 'binary publication: bytes for protobuf, null for JSON';
const binary = new Uint8Array([0, 255, 10, 13, 123]);
await sub.publish(binary);
const [, , p3] = await arrived(received, sub, 3);
check(show(p3.data) === show(binary), `protobuf client got ${show(p3.data)} for ${show(binary)}`);
const [, , j3] = await arrived(jsonReceived, jsonSub, 3);
check(j3.data === null && j3.offset === p3.offset, `JSON client got ${show(j3)} for binary data`);

state.step = 'history';
const h = await sub.history({ limit: 10 });
check(h.epoch === epoch && h.offset === p3.offset, `history position: ${show(h)}`);
check(
  h.publications.length === 3 && show(h.publications[2].data) === show(binary) && json(h.publications[0].data).n === 1,
  `history publications: ${show(h.publications)}`,
);
const jh = await jsonSub.history({ limit: 10 });
check(jh.publications.length === 3 && jh.publications[2].data === null, `JSON history: ${show(jh.publications)}`);

state.step = 'presence';
const presence = await sub.presence();
check(presence.clients[clientId]?.user === user, `${clientId} (${user}) absent: ${show(presence)}`);
const stats = await sub.presenceStats();
check(stats.numClients === 2 && stats.numUsers === 1, `presence stats: ${show(stats)}`);

state.step = 'errors keep their codes';
try {
  await proto.rpc('no-such-method', encoder.encode('{}'));
  fail('rpc succeeded');
} catch (e) {
  check(e.code === 104, `rpc error: ${show(e)}`);
}
try {
  await proto.publish('forbidden:x', encoder.encode('{}'));
  fail('publish into an unknown namespace succeeded');
} catch (e) {
  check(e.code === 102, `publish error: ${show(e)}`);
}

state.step = 'forced reconnect';
let release;
gate = new Promise((resolve) => (release = resolve));
const lost = next(proto, 'connecting');
const secondSubscribe = next(sub, 'subscribed');
await api(apiUrl, apiKey, 'disconnect', { user, client: clientId, disconnect: { code: 3011, reason: 'force reconnect' } });
const why = await lost;
check(why.code === 3011, `reconnecting for ${show(why)}, expected code 3011`);

state.step = 'publish while the client is away';
const missed = [];
for (const n of [4, 5]) missed.push((await api(apiUrl, apiKey, 'publish', { channel, data: { n } })).offset);
release(null);

state.step = 'recovery';
const s2 = await secondSubscribe;
check(s2.wasRecovering && s2.recovered, `not recovered: ${show(s2)}`);
const last = await api(apiUrl, apiKey, 'publish', { channel, data: { n: 6 } });
const all = await arrived(received, sub, 6);
const want = [pub1.offset, p2.offset, p3.offset, ...missed, last.offset];
check(
  show(all.map((p) => p.offset)) === show(want),
  `expected offsets ${show(want)}, got ${show(all.map((p) => p.offset))}`,
);
check(
  [3, 4, 5].every((i) => json(all[i].data).n === i + 1),
  `recovered data: ${show(all.slice(3).map((p) => p.data))}`,
);
const jsonAll = await arrived(jsonReceived, jsonSub, 6);
check(
  show(jsonAll.map((p) => p.offset)) === show(want),
  `JSON client offsets ${show(jsonAll.map((p) => p.offset))}, expected ${show(want)}`,
);

proto.off('disconnected', gone);
proto.disconnect();
plain.disconnect();
console.log(`ok: protobuf and JSON clients, binary data, recovered offsets ${show(missed)}`);
process.exit(0);
