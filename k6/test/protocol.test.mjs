// Unit tests of k6/lib/protocol.js (no server): frame builders, the strict
// server-frame parser, the latency stamp, and that the module's op and error
// code lists still match the Protobuf schema the gateway is built from.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as arq from '../lib/protocol.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('builders produce the documented client frames', () => {
  assert.equal(arq.sub(1, 'chat.lobby'), '{"op":"sub","id":1,"subject":"chat.lobby"}');
  assert.equal(arq.unsub(2, 'chat.lobby'), '{"op":"unsub","id":2,"subject":"chat.lobby"}');
  assert.equal(arq.pub(3, 'chat.lobby', 'hello', { ack: true }), '{"op":"pub","id":3,"subject":"chat.lobby","data":"hello","ack":true}');
  assert.equal(arq.pub(undefined, 'sensors.t1', 'AAEC/w==', { b64: true }), '{"op":"pub","subject":"sensors.t1","data_b64":"AAEC/w=="}');
  assert.equal(
    arq.pub(5, 'a.b', 'x"\n', { headers: { 'trace-id': 't-1' } }),
    '{"op":"pub","id":5,"subject":"a.b","data":"x\\"\\n","headers":{"trace-id":"t-1"}}',
  );
  assert.equal(arq.ping(4), '{"op":"ping","id":4}');
  assert.equal(arq.ping(), '{"op":"ping"}');
  for (const bad of [-1, 1.5, '1', 2 ** 53]) assert.throws(() => arq.ping(bad), arq.ProtocolError);
  assert.throws(() => arq.sub(1, 7), arq.ProtocolError);
  assert.throws(() => arq.pub(1, 'a', 42), arq.ProtocolError);
  assert.throws(() => arq.pub(1, 'a', 'not base64!', { b64: true }), arq.ProtocolError);
  assert.throws(() => arq.pub(1, 'a', 'x', { headers: { k: 1 } }), arq.ProtocolError);
});

test('presence builders and parser', () => {
  assert.equal(arq.sub(1, 'room.1', { presence: true }), '{"op":"sub","id":1,"subject":"room.1","presence":true}');
  assert.equal(arq.presenceSub(1, 'room.1', { name: 'k6' }), '{"op":"sub","id":1,"subject":"room.1","presence":true,"info":{"name":"k6"}}');
  assert.equal(arq.presenceSub(2, 'room.1'), '{"op":"sub","id":2,"subject":"room.1","presence":true}');
  assert.throws(() => arq.presenceSub(1, 'r', 'x'), arq.ProtocolError);
  assert.throws(() => arq.presenceSub(1, 'r', [1]), arq.ProtocolError);
  assert.throws(() => arq.sub(1, 'r', { info: {} }), arq.ProtocolError);
  assert.equal(arq.presence(3, 'room.1'), '{"op":"presence","id":3,"subject":"room.1"}');
  assert.equal(arq.presence(3, 'room.1', { count_only: true, limit: 10, cursor: 'c1' }),
    '{"op":"presence","id":3,"subject":"room.1","count_only":true,"limit":10,"cursor":"c1"}');
  assert.equal(arq.presence(3, 'room.1', { cursor: '' }), '{"op":"presence","id":3,"subject":"room.1"}');
  assert.throws(() => arq.presence(3, 'r', { limit: -1 }), arq.ProtocolError);
  assert.throws(() => arq.presence(3, 'r', { cursor: 5 }), arq.ProtocolError);

  const a = arq.parse('{"op":"presence","id":2,"subject":"room.1","members":[{"user":"ann","session":"s1","node":"n1","joined_at":1700000000123,"info":{"name":"Ann"}}],"count":2,"users":2,"cursor":"c2"}');
  assert.equal(a.members.length, 1);
  assert.deepEqual(a.members[0].info, { name: 'Ann' });
  assert.equal(a.cursor, 'c2');
  assert.ok(arq.isReply(a, 2));
  const c = arq.parse('{"op":"presence","id":3,"subject":"room.1","count":1500,"users":1200}');
  assert.equal(c.members, undefined); // count_only
  assert.equal(c.cursor, ''); // the last page
  assert.deepEqual(arq.parse('{"op":"presence","id":4,"subject":"room.1","members":[],"count":0,"users":0}').members, []);
  const u = arq.parse('{"op":"presence_update","subject":"room.1","member":{"user":"ann","session":"s1","node":"n1","joined_at":5}}');
  assert.ok(arq.isPresenceEvent(u, 'room.1'));
  assert.ok(!arq.isPresenceEvent(u, 'room.2'));
  assert.ok(!arq.isReply(u, 0));
  const l = arq.parse('{"op":"presence_leave","subject":"room.1","member":{"user":"ann","session":"s1","node":"n1","joined_at":5},"reason":"node_down"}');
  assert.equal(l.reason, 'node_down');
  assert.ok(arq.LEAVE_REASONS.includes(l.reason));
  assert.equal(arq.parse('{"op":"error","id":5,"code":"UNAVAILABLE","message":"presence is unavailable"}').code, 'UNAVAILABLE');
});

test('socketURL adds the path and the token', () => {
  assert.equal(arq.socketURL('ws://127.0.0.1:8080', 'a.b.c'), 'ws://127.0.0.1:8080/v1/socket?token=a.b.c');
  assert.equal(arq.socketURL('ws://h:1/v1/socket', ''), 'ws://h:1/v1/socket');
  assert.equal(arq.socketURL('wss://h/', 't'), 'wss://h/v1/socket?token=t');
  assert.equal(arq.socketURL('ws://h/v1/socket?codec=json', 't+/'), 'ws://h/v1/socket?codec=json&token=t%2B%2F');
  assert.throws(() => arq.socketURL('http://h', 't'), arq.ProtocolError);
});

test('parse accepts every server frame of docs/PROTOCOL.md', () => {
  const w = arq.parse('{"op":"welcome","session_id":"H5Fz","node_id":"node-cc","tenant":"acme","user":"alice","limits":{"max_frame_bytes":1048576,"max_subscriptions":1024,"outbound_buffer_bytes":1048576,"publish_rate":10000,"publish_burst":2000},"heartbeat_interval_ms":25000,"protocol_version":1}');
  assert.equal(w.op, 'welcome');
  assert.equal(w.tenant, 'acme');
  assert.equal(w.limits.max_subscriptions, 1024);
  const m = arq.parse('{"op":"msg","subject":"chat.lobby","data":"hello","headers":{"trace-id":"t-123"},"trace_id":"t-123","ts":1795782155251619806}');
  assert.equal(m.data, 'hello');
  assert.equal(m.binary, false);
  assert.equal(m.ts_raw, '1795782155251619806');
  assert.equal(arq.serverTsMs(m), 1795782155251 + 0.619806);
  const b = arq.parse('{"op":"msg","subject":"sensors.t1","data_b64":"AAEC/w==","ts":1795782155251789406}');
  assert.equal(b.binary, true);
  assert.deepEqual(arq.parse('{"op":"ack","id":3}'), { op: 'ack', id: 3 });
  assert.deepEqual(arq.parse('{"op":"pong","id":0}'), { op: 'pong', id: 0 });
  assert.deepEqual(arq.parse('{"op":"error","id":7,"code":"VALIDATION_ERROR","message":"invalid subject: empty token"}'),
    { op: 'error', id: 7, code: 'VALIDATION_ERROR', message: 'invalid subject: empty token' });
  assert.equal(arq.parse('{"op":"error","code":"SLOW_CONSUMER","message":"outbound buffer full"}').id, 0);
});

test('parse throws on anything else', () => {
  const bad = {
    'binary frame': new Uint8Array([1, 2]),
    'malformed JSON': '{"op":"ack","id":1',
    'not an object': '[1]',
    'no op': '{"id":1}',
    'unknown op': '{"op":"presences","id":1}',
    'presence without counts': '{"op":"presence","id":1,"subject":"r"}',
    'presence members not array': '{"op":"presence","id":1,"subject":"r","members":{},"count":0,"users":0}',
    'presence member without node': '{"op":"presence","id":1,"subject":"r","members":[{"user":"u","session":"s","joined_at":1}],"count":1,"users":1}',
    'presence member info string': '{"op":"presence","id":1,"subject":"r","members":[{"user":"u","session":"s","node":"n","joined_at":1,"info":"x"}],"count":1,"users":1}',
    'presence empty cursor': '{"op":"presence","id":1,"subject":"r","count":0,"users":0,"cursor":""}',
    'presence_update without member': '{"op":"presence_update","subject":"r"}',
    'presence_update member extra': '{"op":"presence_update","subject":"r","member":{"user":"u","session":"s","node":"n","joined_at":1,"x":1}}',
    'presence_leave without reason': '{"op":"presence_leave","subject":"r","member":{"user":"u","session":"s","node":"n","joined_at":1}}',
    'client op': '{"op":"sub","id":1,"subject":"a"}',
    'prototype op': '{"op":"constructor"}',
    'ack without id': '{"op":"ack"}',
    'ack id string': '{"op":"ack","id":"1"}',
    'negative id': '{"op":"pong","id":-1}',
    'unknown field': '{"op":"ack","id":1,"extra":true}',
    'unknown code': '{"op":"error","id":1,"code":"OOPS","message":"x"}',
    'error without message': '{"op":"error","id":1,"code":"VALIDATION_ERROR"}',
    'msg without payload': '{"op":"msg","subject":"a","ts":1}',
    'msg with both payloads': '{"op":"msg","subject":"a","data":"x","data_b64":"eA==","ts":1}',
    'msg bad base64': '{"op":"msg","subject":"a","data_b64":"eA=","ts":1}',
    'msg header not string': '{"op":"msg","subject":"a","data":"x","headers":{"k":1}}',
    'msg empty subject': '{"op":"msg","subject":"","data":"x"}',
    'msg ts float': '{"op":"msg","subject":"a","data":"x","ts":1.5}',
    'welcome without limits': '{"op":"welcome","session_id":"s","node_id":"n","tenant":"t","user":"u","heartbeat_interval_ms":1,"protocol_version":1}',
    'welcome bad limits': '{"op":"welcome","session_id":"s","node_id":"n","tenant":"t","user":"u","limits":{"max_frame_bytes":"1","max_subscriptions":1,"outbound_buffer_bytes":1,"publish_rate":0,"publish_burst":0},"heartbeat_interval_ms":1,"protocol_version":1}',
  };
  for (const [what, text] of Object.entries(bad)) {
    assert.throws(() => arq.parse(text), arq.ProtocolError, what);
    const r = arq.tryParse(text);
    assert.equal(r.frame, null, what);
    assert.ok(r.error instanceof arq.ProtocolError, what);
  }
});

test('stamp carries seq, send time and tag; latency helpers', () => {
  const s = arq.stamp(42, 1795782155251.25, 64, 'vu7');
  assert.equal(s.length, 64);
  assert.deepEqual(arq.readStamp(s), { seq: 42, sentMs: 1795782155251.25, tag: 'vu7' });
  assert.deepEqual(arq.readStamp(arq.stamp(1, 1000)), { seq: 1, sentMs: 1000, tag: '' });
  const ns = arq.stampNs(3, '1795782155251619806');
  assert.equal(arq.readStamp(ns).sentMs, 1795782155251 + 0.619806);
  assert.equal(arq.readStamp('hello'), null);
  assert.equal(arq.readStamp('arq1 x 1'), null);
  assert.equal(arq.readStamp('arq1 1 12 bad tag!'), null);
  assert.equal(arq.timeToMs('1795782155251'), 1795782155251);
  assert.equal(arq.timeToMs('12e3'), null);
  assert.equal(arq.latencyMs(10, 12.5), 2.5);
  assert.equal(arq.latencyMs(10, 9.5), 0); // clock jitter within 1 ms clamps to 0
  assert.equal(arq.latencyMs(10, 5), null); // clocks not shared
  const m = arq.parse(JSON.stringify({ op: 'msg', subject: 'a', data: ns }).replace(/}$/, ',"ts":1795782155251719806}'));
  const d = arq.deliveryLatencyMs(m, 1795782155252.0);
  assert.equal(d.seq, 3);
  assert.ok(Math.abs(d.toGateway - 0.1) < 0.001, String(d.toGateway));
  assert.ok(Math.abs(d.total - 0.380194) < 0.001, String(d.total));
  const now = arq.nowMs();
  assert.ok(Math.abs(now - Date.now()) < 50, 'nowMs is Unix ms');
});

test('op names and error codes match pb/proto/arqon/v1/frames.proto', () => {
  const proto = readFileSync(resolve(ROOT, 'pb/proto/arqon/v1/frames.proto'), 'utf8');
  const ops = [...proto.matchAll(/^\s*OP_([A-Z_]+)\s*=\s*(\d+);/gm)].filter((m) => m[1] !== 'UNSPECIFIED');
  const client = ops.filter((m) => Number(m[2]) < 16).map((m) => m[1].toLowerCase());
  const server = ops.filter((m) => Number(m[2]) >= 16).map((m) => m[1].toLowerCase());
  assert.deepEqual(client.sort(), [...arq.CLIENT_OPS].sort());
  assert.deepEqual(server.sort(), [...arq.SERVER_OPS].sort());
  const codes = [...proto.matchAll(/^\s*ERROR_CODE_([A-Z_]+)\s*=\s*\d+;/gm)].map((m) => m[1]).filter((c) => c !== 'UNSPECIFIED');
  assert.deepEqual(codes.sort(), [...arq.ERROR_CODES].sort());
});
