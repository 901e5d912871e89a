// Unit tests of k6/lib/session.js and k6/lib/options.js, the helpers the k6
// scenarios share. They are imported here without the k6 stand-ins, which
// shows they load in plain node; ws and the metrics are small fakes.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as arq from '../lib/protocol.js';
import { SUMMARY_TREND_STATS, thresholds } from '../lib/options.js';
import { connection, dial, onFrames, requireToken, UPGRADED } from '../lib/session.js';

const WELCOME = '{"op":"welcome","session_id":"s","node_id":"n","tenant":"t","user":"u","limits":{"max_frame_bytes":1,"max_subscriptions":1,"outbound_buffer_bytes":1,"publish_rate":1,"publish_burst":1},"heartbeat_interval_ms":1,"protocol_version":1}';

function counter() {
  return { n: 0, add(v) { this.n += v; } };
}

// fakeSocket records what a script does to a k6/ws socket.
function fakeSocket() {
  return {
    handlers: {},
    sent: [],
    closes: [],
    on(ev, fn) { this.handlers[ev] = fn; },
    send(t) { this.sent.push(t); },
    close(...args) { this.closes.push(args); },
    emit(ev, arg) { this.handlers[ev](arg); },
  };
}

test('connection and dial: token in the query or in an Authorization header', () => {
  globalThis.__ENV = { ARQ_URL: 'ws://h:1', ARQ_TOKEN: 'a.b.c' };
  const calls = [];
  const ws = { connect: (url, params, fn) => (calls.push({ url, params, fn }), { status: 101 }) };
  const handler = () => {};
  const conn = connection();
  assert.deepEqual(conn, { url: 'ws://h:1', token: 'a.b.c', auth: 'query' });
  assert.equal(UPGRADED['upgrade status 101'](dial(ws, conn, handler)), true);
  globalThis.__ENV = { ARQ_TOKEN: 'a.b.c', ARQ_AUTH: 'header' };
  dial(ws, connection(), handler);
  assert.deepEqual(calls.map((c) => [c.url, c.params, c.fn === handler]), [
    ['ws://h:1/v1/socket?token=a.b.c', {}, true],
    ['ws://127.0.0.1:8080/v1/socket', { headers: { Authorization: 'Bearer a.b.c' } }, true],
  ]);
  assert.equal(UPGRADED['upgrade status 101']({ status: 401 }), false);
  assert.throws(() => requireToken({ token: '' }), /ARQ_TOKEN/);
  requireToken(conn);
});

test('thresholds: shared rules in the given order, env overrides, then the extras', () => {
  globalThis.__ENV = { P99_ACK_MS: '2', MIN_OK: '0.5' };
  const th = thresholds(['arq_sub_ack_ms', 'ws_connecting', 'arq_connect_ok', 'arq_bad_frames'], { checks: ['rate==1'] });
  assert.deepEqual(Object.entries(th), [
    ['arq_sub_ack_ms', ['p(99)<2']],
    ['ws_connecting', ['p(99)<10']],
    ['arq_connect_ok', ['rate>0.5']],
    ['arq_bad_frames', ['count==0']],
    ['checks', ['rate==1']],
  ]);
  assert.throws(() => thresholds(['arq_nope']), /arq_nope/);
  assert.equal(SUMMARY_TREND_STATS.length, 7);
});

test('onFrames: WELCOME first, SUB id 1 after it, its ACK timed, the rest to frame()', () => {
  const s = fakeSocket();
  const bad = counter();
  const got = [];
  onFrames(s, {
    badFrames: bad,
    subject: 'a.b',
    welcome: (f) => got.push('welcome ' + f.tenant),
    subscribed: (ms) => got.push('subscribed ' + (ms >= 0)),
    frame: (f) => got.push('frame ' + f.op),
  });
  s.emit('message', WELCOME);
  assert.deepEqual(s.sent, [arq.sub(1, 'a.b')]);
  s.emit('message', '{"op":"ack","id":1}');
  s.emit('message', '{"op":"pong","id":1}');
  s.emit('message', '{"op":"bogus"}');
  s.emit('binaryMessage');
  assert.deepEqual(got, ['welcome t', 'subscribed true', 'frame pong']);
  assert.equal(bad.n, 2);
  assert.deepEqual(s.closes, []);
});

test('onFrames: a first frame that is not WELCOME is counted and closes; close() keeps k6 codes', () => {
  const s = fakeSocket();
  const bad = counter();
  const unexpected = counter();
  const rejected = [];
  const c = onFrames(s, {
    badFrames: bad,
    unexpectedClose: unexpected,
    rejected: (e, text) => rejected.push(text),
    binary: () => rejected.push('binary'),
    frame: () => assert.fail('no frame before WELCOME'),
  });
  s.emit('message', 'nope');
  s.emit('binaryMessage');
  assert.deepEqual(rejected, ['nope', 'binary']);
  s.emit('close');
  assert.equal(unexpected.n, 1, 'a close before close() is unexpected');
  s.emit('message', '{"op":"pong","id":1}');
  assert.equal(bad.n, 3);
  assert.equal(c.closing, true);
  c.close(1000);
  // no argument at all, not undefined: k6 would read undefined as code 0
  assert.deepEqual(s.closes, [[], [1000]]);
  s.emit('close');
  assert.equal(unexpected.n, 1);
});
