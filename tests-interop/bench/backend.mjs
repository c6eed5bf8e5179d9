// A backend as cheap as Node makes one, for the proxy benchmarks
// (scripts/bench-proxy.sh): every proxy request is read and answered with a
// fixed result — connect admits user "bench", subscribe and publish allow.
//
//   node tests-interop/bench/backend.mjs PORT
import http from 'http';

const port = Number(process.argv[2]);
const answers = {
  '/connect': '{"result":{"user":"bench"}}',
  '/subscribe': '{"result":{}}',
  '/publish': '{"result":{}}',
};
http
  .createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(answers[req.url] ?? '{"result":{}}');
    });
  })
  .listen(port, '127.0.0.1', () => console.log(`backend on ${port}`));
