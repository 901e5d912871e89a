// Contract test against a live `arq serve`: drives the gateway through
// k6/lib/protocol.js's builders and parser with the npm `ws` client, so the
// module the k6 scenarios use is proven against the real server.
//
// The server is .bin/arq (built with `go build -o .bin/arq ./cmd/arq` when
// absent; ARQ_BIN overrides), run in a temp dir on 127.0.0.1:0; tokens are
// minted by `arq token` in the same dir (same .arqon/dev-secret). The
// process is killed by PID when the tests end. Every step has a timeout.
// The presence tests need the brain arq serve runs in process by default.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

import * as arq from '../lib/protocol.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.ARQ_BIN || join(ROOT, '.bin', 'arq');
const STEP = { timeout: 15000 }; // per test
const WAIT_MS = 5000; // per awaited frame
const QUIET_MS = 300; // "nothing arrives" window

let server = null; // ChildProcess
let serverLog = '';
let dir = '';
let wsURL = '';
const open = new Set(); // clients to close at the end

function mint(tenant, user) {
  return execFileSync(BIN, ['token', '--tenant', tenant, '--sub', user, '--ttl', '10m'], {
    cwd: dir,
    timeout: 10000,
    encoding: 'utf8',
  }).trim();
}

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) {
    try {
      process.kill(server.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

before(async () => {
  if (!existsSync(BIN)) {
    execFileSync('go', ['build', '-o', BIN, './cmd/arq'], { cwd: ROOT, stdio: 'inherit', timeout: 300000 });
  }
  dir = mkdtempSync(join(tmpdir(), 'arq-k6-live-'));
  server = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // even if the run is interrupted mid-test
  process.on('exit', killServer);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      killServer();
      process.exit(130);
    });
  }
  wsURL = await new Promise((resolveURL, reject) => {
    const timer = setTimeout(() => reject(new Error('arq serve printed no websocket: line in 20s\n' + serverLog)), 20000);
    const onData = (chunk) => {
      serverLog += chunk;
      const m = /websocket:\s+(ws:\/\/\S+)/.exec(serverLog);
      if (m) {
        clearTimeout(timer);
        resolveURL(m[1]);
      }
    };
    server.stdout.setEncoding('utf8').on('data', onData);
    server.stderr.setEncoding('utf8').on('data', (c) => (serverLog += c));
    server.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`arq serve exited (${code ?? sig}) before listening\n${serverLog}`));
    });
  });
}, { timeout: 330000 });

after(async () => {
  for (const c of open) c.ws.terminate();
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    process.kill(server.pid, 'SIGTERM');
    const t = setTimeout(killServer, 5000);
    await exited;
    clearTimeout(t);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, { timeout: 15000 });

// Client is a WebSocket whose text frames are parsed by arq.parse into a
// queue; next() waits for the first queued frame matching a predicate.
class Client {
  constructor(token) {
    this.frames = [];
    this.waiters = [];
    this.errors = [];
    this.nextId = 1;
    this.ws = new WebSocket(arq.socketURL(wsURL, token));
    open.add(this);
    this.ws.on('message', (data, isBinary) => {
      let f;
      try {
        f = arq.parse(isBinary ? data : data.toString('utf8'));
      } catch (e) {
        this.errors.push(e);
        return;
      }
      f.recvMs = arq.nowMs();
      this.frames.push(f);
      this.flush();
    });
    this.closed = new Promise((r) => this.ws.once('close', (code) => r(code)));
  }

  static async connect(tenant, user) {
    const c = new Client(mint(tenant, user));
    c.welcome = await c.next((f) => f.op === 'welcome');
    return c;
  }

  flush() {
    for (const w of [...this.waiters]) {
      const i = this.frames.findIndex(w.pred);
      if (i >= 0) {
        const [f] = this.frames.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(f);
      }
    }
  }

  next(pred, what = 'frame', ms = WAIT_MS) {
    return new Promise((resolveFrame, reject) => {
      const w = { pred, resolve: resolveFrame };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no ${what} within ${ms} ms; queued: ${JSON.stringify(this.frames)}; parse errors: ${this.errors.join('; ')}`));
      }, ms);
      this.waiters.push(w);
      this.flush();
    });
  }

  // request sends a frame built with a fresh id and returns the reply.
  async request(build) {
    const id = this.nextId++;
    this.ws.send(build(id));
    return this.next((f) => arq.isReply(f, id), `reply to id ${id}`);
  }

  async subscribe(pattern) {
    const r = await this.request((id) => arq.sub(id, pattern));
    assert.equal(r.op, 'ack', `sub ${pattern}: ${JSON.stringify(r)}`);
  }

  msgs() {
    return this.frames.filter((f) => f.op === 'msg');
  }

  close() {
    open.delete(this);
    this.ws.close(1000);
    return this.closed;
  }
}

test('401 and no upgrade without a valid token', STEP, async () => {
  const ws = new WebSocket(arq.socketURL(wsURL, 'not-a-jwt'));
  const status = await new Promise((r, reject) => {
    ws.on('unexpected-response', (req, res) => r(res.statusCode));
    ws.on('open', () => reject(new Error('upgraded with a bad token')));
    ws.on('error', () => {});
  });
  assert.equal(status, 401);
});

test('welcome is the first frame and parses', STEP, async () => {
  const c = await Client.connect('acme', 'alice');
  assert.equal(c.welcome.tenant, 'acme');
  assert.equal(c.welcome.user, 'alice');
  assert.equal(c.welcome.protocol_version, arq.PROTOCOL_VERSION);
  assert.ok(c.welcome.session_id.length > 0);
  assert.ok(c.welcome.limits.max_frame_bytes > 0);
  assert.ok(c.welcome.heartbeat_interval_ms > 0);
  await c.close();
});

test('sub is acked; pub with ack is acked and delivered to another connection', STEP, async () => {
  const sub = await Client.connect('acme', 'sub');
  const pub = await Client.connect('acme', 'pub');
  await sub.subscribe('chat.*');
  const payload = arq.stamp(1, arq.nowMs(), 64, 'live');
  const r = await pub.request((id) => arq.pub(id, 'chat.lobby', payload, { ack: true, headers: { 'trace-id': 't-1' } }));
  assert.equal(r.op, 'ack');
  const m = await sub.next((f) => f.op === 'msg', 'msg');
  assert.equal(m.subject, 'chat.lobby');
  assert.equal(m.data, payload);
  assert.equal(m.binary, false);
  assert.deepEqual(m.headers, { 'trace-id': 't-1' });
  assert.equal(m.trace_id, 't-1');
  assert.match(m.ts_raw, /^\d{19}$/);
  const d = arq.deliveryLatencyMs(m, m.recvMs);
  assert.equal(d.seq, 1);
  assert.equal(d.tag, 'live');
  assert.ok(d.total !== null && d.total >= 0 && d.total < 1000, `delivery latency ${d.total} ms`);
  assert.ok(d.fromGateway !== null && d.fromGateway < 1000, `gateway -> receiver ${d.fromGateway} ms`);
  assert.equal(pub.msgs().length, 0, 'the publisher is not subscribed and gets nothing');

  // binary payload: data_b64 in, data_b64 out
  const r2 = await pub.request((id) => arq.pub(id, 'chat.bin', 'AAEC/w==', { b64: true, ack: true }));
  assert.equal(r2.op, 'ack');
  const b = await sub.next((f) => f.op === 'msg' && f.subject === 'chat.bin', 'binary msg');
  assert.equal(b.binary, true);
  assert.equal(b.data_b64, 'AAEC/w==');
  await Promise.all([sub.close(), pub.close()]);
});

test('a bad subject gets an error frame with VALIDATION_ERROR', STEP, async () => {
  const c = await Client.connect('acme', 'bad');
  const cases = [
    [(id) => arq.pub(id, 'chat.*', 'x'), 'wildcard in publish subject'],
    [(id) => arq.sub(id, 'a..b'), 'empty token'],
    [(id) => arq.sub(id, ''), 'empty subject'],
    [(id) => arq.unsub(id, 'never.held'), 'not subscribed'],
  ];
  for (const [build, reason] of cases) {
    const r = await c.request(build);
    assert.equal(r.op, 'error', JSON.stringify(r));
    assert.equal(r.code, 'VALIDATION_ERROR');
    assert.match(r.message, new RegExp(reason));
  }
  // the connection stays usable after errors
  const p = await c.request((id) => arq.ping(id));
  assert.equal(p.op, 'pong');
  assert.equal(c.errors.length, 0, c.errors.join('; '));
  await c.close();
});

test('tenant isolation: another tenant\'s ">" subscriber gets only its own marker', STEP, async () => {
  const a = await Client.connect('acme', 'a');
  const b = await Client.connect('globex', 'b');
  const aSub = await Client.connect('acme', 'a2');
  await b.subscribe('>');
  await aSub.subscribe('>');
  for (const subject of ['chat.lobby', 'globex.chat.lobby', 'marker.x', 'arq.globex.chat']) {
    const r = await a.request((id) => arq.pub(id, subject, 'from acme', { ack: true }));
    assert.equal(r.op, 'ack');
  }
  // acme's own wildcard subscriber got all four, so they were routed
  for (let i = 0; i < 4; i++) await aSub.next((f) => f.op === 'msg' && f.data === 'from acme', 'acme msg');
  const r = await b.request((id) => arq.pub(id, 'marker.x', 'globex marker', { ack: true }));
  assert.equal(r.op, 'ack');
  const first = await b.next((f) => f.op === 'msg', 'marker');
  assert.equal(first.data, 'globex marker', `globex received acme's message first: ${JSON.stringify(first)}`);
  await new Promise((r2) => setTimeout(r2, QUIET_MS));
  assert.deepEqual(b.msgs(), [], 'nothing else reaches globex');
  assert.equal(aSub.msgs().filter((f) => f.data === 'globex marker').length, 0, 'nothing from globex reaches acme');
  await Promise.all([a.close(), b.close(), aSub.close()]);
});

test('unsub is acked and stops delivery', STEP, async () => {
  const c = await Client.connect('acme', 'u');
  await c.subscribe('room.1');
  await c.subscribe('room.marker');
  const r = await c.request((id) => arq.unsub(id, 'room.1'));
  assert.equal(r.op, 'ack');
  await c.request((id) => arq.pub(id, 'room.1', 'after unsub', { ack: true }));
  await c.request((id) => arq.pub(id, 'room.marker', 'marker', { ack: true }));
  const first = await c.next((f) => f.op === 'msg', 'marker');
  assert.equal(first.data, 'marker');
  await c.close();
});

test('ping gets pong with the same id', STEP, async () => {
  const c = await Client.connect('acme', 'p');
  for (const id of [7, 0, 123456789]) {
    c.ws.send(arq.ping(id));
    const f = await c.next((x) => x.op === 'pong', 'pong');
    assert.deepEqual(f, { op: 'pong', id, recvMs: f.recvMs });
  }
  const t = arq.nowMs();
  const p = await c.request((id) => arq.ping(id));
  assert.ok(p.recvMs - t < 1000);
  await c.close();
});

test('presence: members see joins (their own too) and leaves; queries count and page', STEP, async () => {
  const room = 'lobby.presence';
  const ann = await Client.connect('acme', 'ann');
  const bob = await Client.connect('acme', 'bob');
  const isEvent = (op, session) => (f) => f.op === op && f.subject === room && f.member.session === session;
  const t0 = Date.now();
  let r = await ann.request((id) => arq.presenceSub(id, room, { name: 'Ann' }));
  assert.equal(r.op, 'ack', JSON.stringify(r));
  const own = await ann.next(isEvent('presence_update', ann.welcome.session_id), 'own join');
  assert.equal(own.member.user, 'ann');
  assert.equal(own.member.node, ann.welcome.node_id);
  assert.deepEqual(own.member.info, { name: 'Ann' });
  assert.ok(Math.abs(own.member.joined_at - t0) < 5000, `joined_at ${own.member.joined_at}`);
  r = await bob.request((id) => arq.presenceSub(id, room));
  assert.equal(r.op, 'ack');
  await bob.next(isEvent('presence_update', bob.welcome.session_id), 'bob own join');
  const bj = await ann.next(isEvent('presence_update', bob.welcome.session_id), 'bob join at ann');
  assert.equal(bj.member.info, undefined);

  const c = await ann.request((id) => arq.presence(id, room, { count_only: true }));
  assert.equal(c.op, 'presence', JSON.stringify(c));
  assert.equal(c.members, undefined);
  assert.equal(c.count, 2);
  assert.equal(c.users, 2);
  assert.equal(c.cursor, '');
  const p1 = await ann.request((id) => arq.presence(id, room, { limit: 1 }));
  assert.equal(p1.members.length, 1);
  assert.notEqual(p1.cursor, '');
  const p2 = await ann.request((id) => arq.presence(id, room, { limit: 1, cursor: p1.cursor }));
  assert.equal(p2.members.length, 1);
  assert.equal(p2.cursor, '', 'the last page has no cursor');
  assert.deepEqual([p1.members[0].session, p2.members[0].session].sort(), [ann.welcome.session_id, bob.welcome.session_id].sort());
  const empty = await ann.request((id) => arq.presence(id, 'nobody.here'));
  assert.deepEqual([empty.members, empty.count, empty.users], [[], 0, 0]);

  r = await bob.request((id) => arq.unsub(id, room));
  assert.equal(r.op, 'ack');
  const left = await ann.next(isEvent('presence_leave', bob.welcome.session_id), 'bob unsubscribe leave');
  assert.equal(left.reason, 'unsubscribe');
  r = await bob.request((id) => arq.presenceSub(id, room));
  await ann.next(isEvent('presence_update', bob.welcome.session_id), 'bob join again');
  await bob.close();
  const closed = await ann.next(isEvent('presence_leave', bob.welcome.session_id), 'bob close leave');
  assert.equal(closed.reason, 'close');
  assert.equal(ann.errors.length, 0, ann.errors.join('; '));
  await ann.close();
});

test('presence: literal subjects only, info bounded, tenants apart', STEP, async () => {
  const a = await Client.connect('acme', 'pa');
  const g = await Client.connect('globex', 'pg');
  for (const build of [(id) => arq.presenceSub(id, 'room.*'), (id) => arq.presence(id, 'room.>')]) {
    const r = await a.request(build);
    assert.equal(r.op, 'error', JSON.stringify(r));
    assert.equal(r.code, 'VALIDATION_ERROR');
    assert.equal(r.message, 'presence needs a literal subject');
  }
  const big = await a.request((id) => arq.presenceSub(id, 'room.big', { x: 'a'.repeat(300) }));
  assert.equal(big.code, 'VALIDATION_ERROR', JSON.stringify(big));
  assert.match(big.message, /info too large/);
  const r = await a.request((id) => arq.presenceSub(id, 'room.shared'));
  assert.equal(r.op, 'ack');
  await a.next((f) => f.op === 'presence_update' && f.member.session === a.welcome.session_id, 'own join');
  const seen = await g.request((id) => arq.presence(id, 'room.shared'));
  assert.deepEqual([seen.members, seen.count], [[], 0], 'globex sees nobody in acme\'s room');
  await g.request((id) => arq.presenceSub(id, 'room.shared'));
  await g.next((f) => f.op === 'presence_update' && f.member.session === g.welcome.session_id, 'globex own join');
  await new Promise((r2) => setTimeout(r2, QUIET_MS));
  assert.equal(a.frames.filter((f) => arq.isPresenceEvent(f)).length, 0, 'acme hears nothing of globex');
  await Promise.all([a.close(), g.close()]);
});
