// Node's undici and ws against hermod-router: clients nobody here wrote, as a Node.js app's own
// HTTP and WebSocket stack would speak to Heroku's router. Driven by
// tests/integration/test_node_clients.py, which owns the cluster and asserts on the router's side.
//
//   node node_clients.mjs backend
//       A dyno: plain HTTP/1.1 and WebSocket (ws's server) on 127.0.0.1, an ephemeral port printed
//       as "port N". /echo* answers JSON {method, url, httpVersion, headers}; POST /sink answers
//       {bytes, sha256} of the body; /ws echoes every WebSocket message as it came (text or binary).
//   node node_clients.mjs client --host HOST --tls PORT --plain PORT --ca CA.pem
//       Runs every check against the router; prints one "ok NAME" line per check, a JSON line
//       "result {...}" with what the router's side should show, and exits 0, or prints
//       "FAIL NAME: why" and exits 1.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { Agent, request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';

function backend() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let out;
      if (req.url.startsWith('/sink'))
        out = { bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') };
      else
        out = { method: req.method, url: req.url, httpVersion: req.httpVersion, headers: req.headers };
      const b = Buffer.from(JSON.stringify(out));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': b.length });
      res.end(b);
    });
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`));
}

function args() {
  const a = {};
  for (let i = 3; i + 1 < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  for (const k of ['host', 'tls', 'plain', 'ca'])
    if (!a[k]) throw new Error(`missing --${k}`);
  return a;
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// The test's hostname resolves to loopback for every client here (the router routes by Host and
// picks the certificate by SNI, so both must carry the real name).
function lookup(hostname, options, cb) {
  if (typeof options === 'function') cb = options;
  if (options && options.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
}

async function json(res) {
  const text = await res.body.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`status ${res.statusCode}, not JSON: ${text.slice(0, 200)}`);
  }
}

function wsExchange(url, opts, name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...opts, lookup, handshakeTimeout: 10000 });
    const big = randomBytes(200 * 1024);
    const got = [];
    let pong = false;
    const fail = (e) => { ws.terminate(); reject(new Error(`${name}: ${e.message || e}`)); };
    ws.on('error', fail);
    ws.on('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode} instead of 101`)));
    ws.on('open', () => {
      ws.ping('are you there');
      ws.send('hello through hermod');
      ws.send(big);
    });
    ws.on('pong', (data) => { pong = data.toString() === 'are you there'; });
    ws.on('message', (data, isBinary) => {
      got.push({ data, isBinary });
      if (got.length === 2) {
        try {
          check(!got[0].isBinary && got[0].data.toString() === 'hello through hermod', 'text echo');
          check(got[1].isBinary && Buffer.compare(got[1].data, big) === 0, '200 KiB binary echo');
        } catch (e) {
          fail(e);
          return;
        }
        ws.close(1000, 'done');
      }
    });
    ws.on('close', (code) => {
      if (got.length === 2 && code === 1000) resolve({ pong });
      else reject(new Error(`${name}: closed with ${code} after ${got.length} echoes`));
    });
  });
}

async function client() {
  const a = args();
  const ca = readFileSync(a.ca);
  const connect = { ca, servername: a.host, lookup };
  const origin = `https://${a.host}:${a.tls}`;
  const result = { h1_requests: 0, h2_requests: 0 };
  const steps = [];
  const step = async (name, fn) => {
    try {
      await fn();
      console.log(`ok ${name}`);
      steps.push(name);
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      process.exit(1);
    }
  };

  const h1 = new Agent({ connect });
  await step('undici https GET', async () => {
    const res = await request(`${origin}/echo/undici-h1`, { dispatcher: h1 });
    check(res.statusCode === 200, `status ${res.statusCode}`);
    const e = await json(res);
    check(e.url === '/echo/undici-h1', `path ${e.url}`);
    check(e.headers['x-forwarded-proto'] === 'https', `X-Forwarded-Proto ${e.headers['x-forwarded-proto']}`);
    check(e.headers['x-forwarded-port'] === String(a.tls), `X-Forwarded-Port ${e.headers['x-forwarded-port']}`);
    check(/^[0-9a-f-]{36}$/.test(e.headers['x-request-id'] || ''), `X-Request-Id ${e.headers['x-request-id']}`);
    check(res.headers['via'] === '1.1 hermod', `Via on the response: ${res.headers['via']}`);
    check(e.headers['via'] === '1.1 hermod', `Via at the dyno: ${e.headers['via']}`);
    result.h1_requests++;
  });
  await step('undici https POST 1 MiB', async () => {
    const body = randomBytes(1 << 20);
    const res = await request(`${origin}/sink`, { dispatcher: h1, method: 'POST', body });
    check(res.statusCode === 200, `status ${res.statusCode}`);
    const e = await json(res);
    check(e.bytes === body.length, `bytes ${e.bytes}`);
    check(e.sha256 === createHash('sha256').update(body).digest('hex'), 'sha256 of the body');
    result.h1_requests++;
  });
  await step('undici https keep-alive', async () => {
    // The same agent reuses its connection: 10 requests in a row on it.
    for (let i = 0; i < 10; i++) {
      const res = await request(`${origin}/echo/ka-${i}`, { dispatcher: h1 });
      check(res.statusCode === 200, `status ${res.statusCode}`);
      check((await json(res)).url === `/echo/ka-${i}`, 'path');
      result.h1_requests++;
    }
  });
  await h1.close();

  const h2 = new Agent({ connect, allowH2: true });
  await step('undici HTTP/2 by ALPN, 20 concurrent streams', async () => {
    const all = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request(`${origin}/echo/h2-${i}?q=${i}`, { dispatcher: h2 }).then(async (res) => ({ res, e: await json(res) }))));
    all.forEach(({ res, e }, i) => {
      check(res.statusCode === 200, `stream ${i}: status ${res.statusCode}`);
      check(e.url === `/echo/h2-${i}?q=${i}`, `stream ${i}: path ${e.url}`);
      check(e.httpVersion === '1.1', `stream ${i}: HTTP/${e.httpVersion} to the dyno`);
      check(e.headers['x-forwarded-proto'] === 'https', `stream ${i}: X-Forwarded-Proto`);
    });
    result.h2_requests += all.length;
  });
  await step('undici HTTP/2 POST 1 MiB', async () => {
    const body = randomBytes(1 << 20);
    const res = await request(`${origin}/sink`, { dispatcher: h2, method: 'POST', body });
    check(res.statusCode === 200, `status ${res.statusCode}`);
    const e = await json(res);
    check(e.sha256 === createHash('sha256').update(body).digest('hex'), 'sha256 of the body');
    result.h2_requests++;
  });
  await h2.close();

  await step('ws over TLS (wss)', async () => {
    const r = await wsExchange(`wss://${a.host}:${a.tls}/ws`, { ca, servername: a.host }, 'wss');
    check(r.pong, 'a ping answered through the tunnel');
  });
  await step('ws over the plain listener', async () => {
    await wsExchange(`ws://${a.host}:${a.plain}/ws`, {}, 'ws');
  });
  console.log(`result ${JSON.stringify({ ...result, steps })}`);
}

const guard = setTimeout(() => {
  console.log('FAIL timeout: the checks took over 60 s');
  process.exit(1);
}, 60000);
if (process.argv[2] === 'backend') {
  clearTimeout(guard);
  backend();
} else if (process.argv[2] === 'client') {
  client().then(() => { clearTimeout(guard); process.exit(0); }, (e) => { console.log(`FAIL ${e.message}`); process.exit(1); });
} else {
  console.error('usage: node node_clients.mjs backend | client --host H --tls P --plain P --ca F');
  process.exit(2);
}
