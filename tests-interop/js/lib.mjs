// What the interop scripts share: failing with the step that failed, a 20 s
// limit, the server API, and waiting for an SDK event.
export const state = { step: 'start' };

export function fail(reason) {
  console.error(`FAIL during "${state.step}": ${reason}`);
  process.exit(1);
}

export function check(ok, reason) {
  if (!ok) fail(reason);
}

// JSON, with byte arrays shown as their bytes.
export const show = (v) =>
  JSON.stringify(v, (_, x) => (x instanceof Uint8Array ? `bytes[${Array.from(x).join(',')}]` : x));

export const next = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));

setTimeout(() => fail('timed out after 20 s'), 20_000);

// Calls the server API method `method` and returns its result (failing the
// script on any error).
export async function api(apiUrl, apiKey, method, body) {
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
