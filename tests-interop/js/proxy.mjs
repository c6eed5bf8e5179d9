// centrifuge-js against a crier whose connect, subscribe, publish and RPC
// proxies point at a backend the Rust test runs (tests/server/proxy.rs):
// connect WITHOUT a token, land in the backend's server-side channel, a
// subscription the backend refuses (its code), one it allows (its data),
// a publication the backend modifies, and RPC results and errors.
//
//   node proxy.mjs WS_URL API_URL API_KEY
//
// Exits 0 on success; prints the reason and exits 1 on failure.
import { api, check, fail, next, show, state } from './lib.mjs';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [wsUrl, apiUrl, apiKey] = process.argv.slice(2);
if (!apiKey) {
  console.error('usage: node proxy.mjs WS_URL API_URL API_KEY');
  process.exit(2);
}

state.step = 'connect without a token, through the connect proxy';
const client = new Centrifuge(wsUrl, { websocket: WebSocket, data: { user: 'js-proxied' } });
client.on('disconnected', (ctx) => fail(`disconnected: ${show(ctx)}`));
const connected = next(client, 'connected');
const serverSide = next(client, 'subscribed');
client.connect();
const ctx = await connected;
check(ctx.data?.hello === 'from backend', `connect data: ${show(ctx)}`);
const sub0 = await serverSide;
check(sub0.channel === 'news', `server-side subscription: ${show(sub0)}`);

state.step = 'a publication in the server-side channel';
const published = next(client, 'publication');
await api(apiUrl, apiKey, 'publish', { channel: 'news', data: { n: 1 } });
const p0 = await published;
check(p0.channel === 'news' && p0.data?.n === 1, `got ${show(p0)}`);

state.step = 'a subscription the backend refuses';
const denied = client.newSubscription('proxied:denied');
const gone = next(denied, 'unsubscribed');
denied.subscribe();
const why = await gone;
check(why.code === 1403, `unsubscribed with ${show(why)}, expected the backend's 1403`);

state.step = 'a subscription the backend allows';
const room = client.newSubscription('proxied:room');
const subscribed = next(room, 'subscribed');
room.subscribe();
const s = await subscribed;
check(s.data?.welcome === true, `subscribe data: ${show(s)}`);

state.step = 'a publication the backend modifies';
const arrived = next(room, 'publication');
await room.publish({ text: 'hi' });
const p = await arrived;
check(show(p.data) === show({ modified: { text: 'hi' } }), `got ${show(p.data)}`);

state.step = 'rpc';
const r = await client.rpc('sum', { a: 2, b: 5 });
check(r.data?.sum === 7, `rpc result: ${show(r)}`);
try {
  await client.rpc('nope', {});
  fail('rpc to an unknown method succeeded');
} catch (e) {
  check(e.code === 1404, `rpc error: ${show(e)}`);
}

client.removeAllListeners('disconnected');
client.disconnect();
console.log('ok: connect, subscribe, publish and rpc through the proxies');
process.exit(0);
