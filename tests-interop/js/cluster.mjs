// The real centrifuge-js SDK against two crier nodes sharing one Redis:
// the client is on node A, publications go through node B's API. Then
// Redis is shut down (without saving) and started again empty: the SDK
// must be told to resubscribe (unsubscribe code 2500), keep retrying
// while Redis is down, resubscribe once it is back with recovery reported
// as incomplete (Redis lost the stream), and receive what is published
// after that.
//
//   node cluster.mjs WS_URL_A TOKEN API_URL_B API_KEY USER REDIS_PORT
//
// Exits 0 on success; prints the reason and exits 1 on failure.
import { spawn, execFileSync } from 'node:child_process';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [wsUrl, token, apiUrl, apiKey, user, redisPort] = process.argv.slice(2);
if (!redisPort) {
  console.error('usage: node cluster.mjs WS_URL_A TOKEN API_URL_B API_KEY USER REDIS_PORT');
  process.exit(2);
}
const channel = 'chat:cluster-js';

let step = 'start';
let redis = null; // the redis-server this script starts again
function fail(reason) {
  console.error(`FAIL during "${step}": ${reason}`);
  process.exit(1);
}
process.on('exit', () => redis?.kill('SIGKILL'));
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
  return JSON.parse(text);
}
async function publish(data) {
  const reply = await api('publish', { channel, data });
  check(!reply.error, `publish: ${show(reply)}`);
  return reply.result;
}

const next = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));

const client = new Centrifuge(wsUrl, { token, websocket: WebSocket, name: 'crier-cluster-js' });
const gone = (ctx) => fail(`client disconnected: ${show(ctx)}`);
client.on('disconnected', gone);
const sub = client.newSubscription(channel, {
  recoverable: true,
  minResubscribeDelay: 50,
  maxResubscribeDelay: 300,
});
const received = [];
sub.on('publication', (ctx) => received.push(ctx));
sub.on('unsubscribed', (ctx) => fail(`unsubscribed for good: ${show(ctx)}`));
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

step = 'subscribe on node A';
const firstSubscribe = next(sub, 'subscribed');
sub.subscribe();
client.connect();
const s1 = await firstSubscribe;
const epoch = s1.streamPosition?.epoch;
check(s1.recoverable && epoch, `not a recoverable subscription: ${show(s1)}`);

step = 'publish through node B';
for (const n of [1, 2, 3]) await publish({ n });
const got = await publications(3);
check(show(got.map((p) => p.offset)) === '[1,2,3]', `offsets ${show(got.map((p) => p.offset))}`);

step = 'redis goes away';
const resubscribing = next(sub, 'subscribing');
const errors = [];
sub.on('error', (ctx) => errors.push(ctx));
execFileSync('redis-cli', ['-p', redisPort, 'shutdown', 'nosave']);
const why = await resubscribing;
check(why.code === 2500, `subscribing again for ${show(why)}, expected code 2500`);
const down = await api('publish', { channel, data: { n: 'lost' } });
check(down.error?.code === 100, `publish while Redis is down: ${show(down)}`);

step = 'redis comes back empty';
const resubscribed = next(sub, 'subscribed');
redis = spawn('redis-server', ['--port', redisPort, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
  stdio: 'ignore',
});
const s2 = await resubscribed;
check(s2.wasRecovering === true && s2.recovered === false, `recovery must be reported incomplete: ${show(s2)}`);
check(s2.streamPosition?.epoch !== epoch, `the lost stream kept its epoch: ${show(s2)}`);
check(errors.every((e) => e.error?.code === 100), `resubscribe errors other than 100: ${show(errors)}`);

step = 'live again';
const after = await publish({ n: 'after' });
const [p] = (await publications(4)).slice(3);
check(p.offset === after.offset && p.data?.n === 'after', `got ${show(p)} for ${show(after)}`);

client.off('disconnected', gone);
client.disconnect();
console.log(`ok: 2500 on Redis loss, ${errors.length} temporary errors while down, resubscribed at ${show(s2.streamPosition)}`);
process.exit(0);
