// The admin UI in a real browser (Debian's chromium, headless, driven by
// playwright-core; never a downloaded browser), against a crier the Rust
// test started (tests/server/admin.rs) with admin.password set:
//
//   node admin.mjs BASE_URL WS_URL API_URL API_KEY SHOTS_DIR TOKEN_U1 TOKEN_U2 TOKEN_U3
//
// Logs in (a wrong password refused, the admin API refusing a request
// without a session), watches 3 centrifuge-js clients appear and go, publishes
// from the Actions page to a real subscriber, sees an API publication in
// the live tail, disconnects a user from the UI, checks the phone-sized
// layout, the keyboard and the unreachable-server banner, finds no console
// error on any page, and takes a screenshot of each page into SHOTS_DIR.
// Exits 0 on success; prints the failing step and exits 1 otherwise.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [base, wsUrl, apiUrl, apiKey, shots, ...tokens] = process.argv.slice(2);
if (tokens.length !== 3) {
  console.error('usage: node admin.mjs BASE_URL WS_URL API_URL API_KEY SHOTS_DIR TOKEN_U1 TOKEN_U2 TOKEN_U3');
  process.exit(2);
}
const PASSWORD = 'admin-password';
let step = 'start';
let browser;
async function fail(reason) {
  console.error(`FAIL during "${step}": ${reason}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
const check = (ok, reason) => ok || fail(reason);
setTimeout(() => fail('timed out after 90 s'), 90_000);
const show = (v) => JSON.stringify(v);
const next = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));
mkdirSync(shots, { recursive: true });

async function api(method, body) {
  const res = await fetch(`${apiUrl}/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const reply = await res.json();
  check(res.ok && !reply.error, `API ${method}: ${show(reply)}`);
  return reply.result;
}

// Waits until `fn` (run in the page) returns something truthy.
async function until(page, what, fn, arg, timeout = 2000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    await fail(`${what}: not seen within ${timeout} ms`);
  }
}
// Waits until the async `fn`, run in the page, resolves to something
// truthy (waitForFunction would take the promise itself as truthy).
async function untilEvaluated(page, what, fn, timeout) {
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(fn))) {
    if (Date.now() > deadline) await fail(`${what}: not seen within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const tile = (label) => `[data-figure="${label}"] b`;
const tileIs = ([sel, value]) => document.querySelector(sel)?.textContent === value;

async function client(token, channels) {
  const c = new Centrifuge(wsUrl, { websocket: WebSocket, token });
  const connected = next(c, 'connected');
  c.connect();
  await connected;
  const subs = [];
  for (const ch of channels) {
    const s = c.newSubscription(ch);
    const ok = next(s, 'subscribed');
    s.subscribe();
    await ok;
    subs.push(s);
  }
  return { c, subs };
}

step = 'the admin API refuses a request without a session';
{
  const res = await fetch(`${base}/admin/api`, { method: 'POST', body: '{"method":"info","params":{}}' });
  check(res.status === 401, `POST /admin/api without a token: HTTP ${res.status}`);
  const init = await (await fetch(`${base}/admin/init`)).json();
  check(init.authenticated === false && init.insecure === false, `init: ${show(init)}`);
}

step = 'start chromium';
browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(`${page.url()}: console error: ${m.text()}`); });
page.on('pageerror', (e) => problems.push(`${page.url()}: uncaught: ${e.message}`));
const external = [];
page.on('request', (r) => { if (!r.url().startsWith(base) && !r.url().startsWith('data:')) external.push(r.url()); });

step = 'a wrong password is refused';
await page.goto(`${base}/`);
await page.waitForSelector('#login');
await page.screenshot({ path: `${shots}/login.png` });
await page.fill('#password', 'not-the-password');
await page.press('#password', 'Enter');
await until(page, 'the wrong-password message', () => document.querySelector('#login-error')?.textContent === 'Wrong password.');
check(await page.isVisible('#login'), 'still on the login form');

step = 'log in';
await page.fill('#password', PASSWORD);
await page.click('#login button[type=submit]');
await page.waitForSelector('#tiles [data-figure="clients"]', { timeout: 3000 });

step = '3 WebSocket clients appear within 2 s';
const clients = [
  await client(tokens[0], ['chat:room', 'news']),
  await client(tokens[1], ['chat:room']),
  await client(tokens[2], ['chat:room']),
];
await until(page, '3 clients', tileIs, [tile('clients'), '3']);
await until(page, '4 subscriptions', tileIs, [tile('subscriptions'), '4']);
await until(page, '2 channels', tileIs, [tile('channels'), '2']);
await until(page, 'websocket: 3 in the transports table',
  () => [...document.querySelectorAll('#transports tr')].some((tr) => tr.textContent === 'websocket3'));
// Two readings a second apart draw the charts: their legends name the series.
await until(page, 'the charts', () => document.querySelector('#chart-rates + .legend')?.textContent.includes('deliveries/s'), null, 3000);
await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

step = 'the 3 clients go';
for (const { c } of clients) c.disconnect();
await until(page, 'no client left', tileIs, [tile('clients'), '0']);
await until(page, 'no subscription left', tileIs, [tile('subscriptions'), '0']);

step = 'the connections page shows users and their subscriptions';
clients[0] = await client(tokens[0], ['chat:room', 'news']);
const u2 = await client(tokens[1], ['chat:room']);
await page.click('nav a[href="#/connections"]');
await until(page, 'u1 with chat:room and news',
  () => [...document.querySelectorAll('#connection-list tbody tr')].some((tr) => tr.children[1].textContent === 'u1'
    && tr.children[2].textContent.includes('chat:room') && tr.children[2].textContent.includes('news')));
await page.screenshot({ path: `${shots}/connections.png`, fullPage: true });

step = 'disconnect a user from the UI: the client closes with the code';
const closed = next(u2.c, 'disconnected');
await page.fill('#user-filter', 'u2');
await page.press('#user-filter', 'Enter');
await until(page, 'only u2 listed', () => {
  const rows = [...document.querySelectorAll('#connection-list tbody tr')];
  return rows.length === 1 && rows[0].children[1].textContent === 'u2';
});
await page.click('#connection-list button[data-client]');
const why = await Promise.race([closed, new Promise((r) => setTimeout(() => r(null), 3000))]);
check(why && why.code === 3503, `u2's client saw ${show(why)}, expected code 3503 (force disconnect)`);
await until(page, 'the outcome shown', () => document.querySelector('#connection-outcome')?.textContent === 'disconnect done.');

step = 'unsubscribe from the UI';
await page.fill('#user-filter', 'u1');
await page.press('#user-filter', 'Enter');
const left = next(clients[0].subs[1], 'unsubscribed');
await until(page, 'u1 listed with news', () => !!document.querySelector('button[aria-label$=" from news"]'));
await page.click('button[aria-label$=" from news"]');
const unsub = await Promise.race([left, new Promise((r) => setTimeout(() => r(null), 3000))]);
check(unsub && unsub.code === 2000, `news subscription ended with ${show(unsub)}, expected 2000`);

step = 'publish from the Actions page to a real subscriber';
const sub = clients[0].subs[0];
const got = next(sub, 'publication');
await page.click('nav a[href="#/actions"]');
await page.selectOption('#method', 'publish');
await page.fill('#fields input[name=channel]', 'chat:room');
await page.fill('#fields textarea[name=data]', '{"text": "from the admin UI"}');
await page.click('#call');
const p = await Promise.race([got, new Promise((r) => setTimeout(() => r(null), 3000))]);
check(p && p.data?.text === 'from the admin UI', `subscriber got ${show(p)}`);
await until(page, 'the answer', () => document.querySelector('#answer')?.textContent.includes('"offset"'));
step = 'the delivery to the WebSocket subscriber is timed for the latency chart';
await untilEvaluated(page, 'a delivery latency in the stats', async () => {
  const r = await fetch('admin/stats', { headers: { Authorization: 'token ' + sessionStorage.getItem('crier-admin-token') } });
  const s = await r.json();
  return s.series.delivery_p50_ms.some((v) => v != null) && s.series.publish_p99_ms.some((v) => v != null);
}, 3000);
await page.screenshot({ path: `${shots}/actions.png`, fullPage: true });

step = 'publish through the API and see it in the live tail within 1 s';
await page.click('nav a[href="#/channels"]');
await until(page, 'chat:room listed', () => [...document.querySelectorAll('#channel-list td')].some((td) => td.textContent === 'chat:room'));
const row = page.locator('#channel-list tr', { hasText: 'chat:room' });
await row.getByRole('button', { name: 'Open' }).click();
await until(page, 'the tail open', () => document.querySelector('#tail-state')?.textContent === 'live');
await until(page, 'history shows the UI publication', () => document.querySelector('#history')?.textContent.includes('from the admin UI'));
await until(page, 'presence shows u1', () => [...document.querySelectorAll('#presence td')].some((td) => td.textContent === 'u1'));
const sent = Date.now();
await api('publish', { channel: 'chat:room', data: { text: 'tail me' } });
await until(page, 'the API publication in the tail', () => document.querySelector('#tail-rows')?.textContent.includes('tail me'), null, 1000);
console.log(`the live tail showed the API publication ${Date.now() - sent} ms after the API call`);
await page.screenshot({ path: `${shots}/channels.png`, fullPage: true });

step = 'the configuration page, secrets masked';
await page.click('nav a[href="#/config"]');
await until(page, 'the configuration', () => document.querySelector('#config')?.textContent.includes('"http_api"'));
const conf = await page.textContent('#config');
check(!conf.includes(PASSWORD) && !conf.includes(apiKey) && conf.includes('********'), 'a secret shows on the configuration page');
await page.screenshot({ path: `${shots}/config.png` });

step = 'keyboard: the navigation works with Tab and Enter';
await page.focus('nav a[href="#/overview"]');
await page.keyboard.press('Tab');
await page.keyboard.press('Enter');
await until(page, 'the channels page by keyboard', () => location.hash === '#/channels' && !!document.querySelector('#channel-pattern'));

step = 'an unreachable server is said so';
await page.click('nav a[href="#/overview"]');
await page.route('**/admin/stats', (r) => r.abort('connectionrefused'));
await until(page, 'the unreachable banner', () => {
  const e = document.querySelector('#error');
  return e && !e.hidden && e.textContent.startsWith('Cannot reach the crier server');
}, null, 3000);
await page.screenshot({ path: `${shots}/unreachable.png` });
await page.unroute('**/admin/stats');
await until(page, 'the banner gone once the server answers', () => document.querySelector('#error').hidden, null, 3000);
// Chromium logs a failed fetch as a console error: those were caused on purpose.
for (let i = problems.length - 1; i >= 0; i--) if (problems[i].includes('admin/stats') || problems[i].includes('ERR_CONNECTION_REFUSED')) problems.splice(i, 1);

step = 'a phone-sized screen';
await page.setViewportSize({ width: 390, height: 844 });
await page.reload();
await page.waitForSelector('#tiles [data-figure="clients"]');
const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
check(overflow <= 0, `the page is ${overflow} px wider than a phone screen`);
await page.screenshot({ path: `${shots}/phone.png`, fullPage: true });

step = 'log out: the session is gone';
await page.setViewportSize({ width: 1280, height: 900 });
await page.click('#logout');
await page.waitForSelector('#login');

step = 'no console errors, nothing from another host';
check(problems.length === 0, problems.join('\n'));
check(external.length === 0, `requests to other hosts: ${external.join(', ')}`);

clients[0].c.disconnect();
await browser.close();
console.log('admin UI: all steps passed');
process.exit(0);
