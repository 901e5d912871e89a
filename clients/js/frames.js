// ArqonBus JSON protocol (v1): frame builders and the server-frame parser.
//
// One ES module shared by the JavaScript client (clients/js/index.js, which
// runs in browsers and node) and by the k6 scenarios (k6/lib/protocol.js
// re-exports it, adding k6's latency helpers). It must stay loadable by
// both runtimes, so it uses no node built-ins, no k6 modules, no imports
// and no syntax newer than ES2020 (scripts/k6-check.sh checks it).
//
// The contract it encodes is docs/PROTOCOL.md section 3 (pb/json.go,
// gateway/handlers.go, gateway/upgrade.go):
//
//   client -> server   {"op":"sub","id":1,"subject":"chat.lobby"}
//                      {"op":"sub","id":1,"subject":"room.1","presence":true,"info":{"name":"k6"}}
//                      {"op":"unsub","id":2,"subject":"chat.lobby"}
//                      {"op":"pub","id":3,"subject":"chat.lobby","data":"hello","ack":true}
//                      {"op":"ping","id":4}
//                      {"op":"presence","id":5,"subject":"room.1","count_only":true,"limit":100,"cursor":"..."}
//   server -> client   welcome, msg, ack, error, pong, presence (the answer
//                      to a presence query), presence_update, presence_leave
//
// Builders return the text to send in one WebSocket text frame. parse()
// turns a received frame into a plain object and throws ProtocolError on
// anything that is not exactly one of the eight server frames (with
// {lenient: true}, unknown fields are allowed: what a client that must
// survive a newer server wants).

export const PROTOCOL_VERSION = 1;
export const SOCKET_PATH = '/v1/socket';
export const SUBPROTOCOL_JSON = 'arqon.v1.json';

// Server-only ops in the JSON codec (pb.OpName for OP_WELCOME..
// OP_PRESENCE_LEAVE). The server also sends "presence": the answer to a
// client's presence query carries the query's op.
export const SERVER_OPS = ['welcome', 'msg', 'ack', 'error', 'pong', 'presence_update', 'presence_leave'];
// Client ops (OP_SUB..OP_PRESENCE).
export const CLIENT_OPS = ['sub', 'unsub', 'pub', 'ping', 'presence'];
// Why a member left, as PRESENCE_LEAVE "reason" (docs/PROTOCOL.md).
export const LEAVE_REASONS = [
  'unsubscribe', 'close', 'reset', 'ping_timeout', 'token_expired', 'node_down', 'shutdown', 'slow_consumer', 'kicked', 'sync',
];
// Presence limits: "info" bytes, members per answer (default and most).
export const PRESENCE_INFO_MAX = 256;
export const PRESENCE_LIMIT_MAX = 1000;
// Error codes as sent in ERROR frames (pb ErrorCode without ERROR_CODE_).
export const ERROR_CODES = [
  'VALIDATION_ERROR',
  'AUTHENTICATION_FAILED',
  'AUTHORIZATION_DENIED',
  'POLICY_BLOCKED',
  'RATE_LIMIT_EXCEEDED',
  'SLOW_CONSUMER',
  'INTERNAL_ERROR',
  'LIMIT_EXCEEDED',
  'UNAVAILABLE',
];

// Fields each server frame may carry, and which of them are required.
const SHAPES = {
  welcome: {
    required: ['session_id', 'node_id', 'tenant', 'user', 'limits', 'heartbeat_interval_ms', 'protocol_version'],
    optional: [],
  },
  msg: { required: ['subject'], optional: ['data', 'data_b64', 'headers', 'trace_id', 'ts'] },
  ack: { required: ['id'], optional: [] },
  pong: { required: ['id'], optional: [] },
  error: { required: ['code', 'message'], optional: ['id'] },
  presence: { required: ['id', 'subject', 'count', 'users'], optional: ['members', 'cursor'] },
  presence_update: { required: ['subject', 'member'], optional: [] },
  presence_leave: { required: ['subject', 'member', 'reason'], optional: [] },
};
const MEMBER_FIELDS = { required: ['user', 'session', 'node', 'joined_at'], optional: ['info'] };
const LIMIT_FIELDS = ['max_frame_bytes', 'max_subscriptions', 'outbound_buffer_bytes', 'publish_rate', 'publish_burst'];

// ProtocolError is thrown by parse() and by the builders on bad input.
export class ProtocolError extends Error {
  constructor(message, raw) {
    super(message);
    this.name = 'ProtocolError';
    this.raw = raw;
  }
}

// ---------------------------------------------------------------- URLs

// socketURL returns the WebSocket URL with the token as ?token= (k6 and
// browsers cannot rely on an Authorization header for every call). base may
// be "ws://host:port", "ws://host:port/v1/socket" or carry a query already.
export function socketURL(base, token) {
  if (typeof base !== 'string' || !/^wss?:\/\//.test(base)) {
    throw new ProtocolError('socketURL: base must start with ws:// or wss://, got ' + String(base));
  }
  let url = base;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (!/\/v1\/socket$/.test(path)) {
    const cut = path.replace(/\/+$/, '');
    url = cut + SOCKET_PATH + (q < 0 ? '' : url.slice(q));
  }
  if (token) {
    url += (url.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(token);
  }
  return url;
}

// ---------------------------------------------------------------- builders

function checkId(id) {
  if (id === undefined) return;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > Number.MAX_SAFE_INTEGER) {
    throw new ProtocolError('id must be a non-negative safe integer, got ' + String(id));
  }
}

function checkSubject(subject) {
  if (typeof subject !== 'string') {
    throw new ProtocolError('subject must be a string, got ' + typeof subject);
  }
}

function frame(op, id, subject) {
  checkId(id);
  const f = { op: op };
  if (id !== undefined) f.id = id;
  if (subject !== undefined) {
    checkSubject(subject);
    f.subject = subject;
  }
  return f;
}

// sub(id, pattern, opts): subscribe; the server always answers ACK or
// ERROR. opts.presence (a literal subject only) makes the connection a
// member of the room; opts.info is the member's client info, an object (at
// most 256 bytes as JSON).
export function sub(id, pattern, opts) {
  const o = opts || {};
  const f = frame('sub', id, pattern);
  if (o.presence) f.presence = true;
  if (o.info !== undefined) {
    if (!o.presence) throw new ProtocolError('sub info needs opts.presence');
    if (o.info === null || typeof o.info !== 'object' || Array.isArray(o.info)) {
      throw new ProtocolError('sub info must be an object');
    }
    f.info = o.info;
  }
  return JSON.stringify(f);
}

// presenceSub(id, room, info): sub with presence (info optional).
export function presenceSub(id, room, info) {
  return sub(id, room, info === undefined ? { presence: true } : { presence: true, info: info });
}

// presence(id, room, opts): ask for a room's members. The server answers
// {op:'presence', id, ...} (see parse) or ERROR (UNAVAILABLE when no
// presence brain answers). opts.count_only asks for the counts only;
// opts.limit (1..1000, default 1000) bounds the page; opts.cursor continues
// from a previous answer's cursor.
export function presence(id, room, opts) {
  const o = opts || {};
  const f = frame('presence', id, room);
  if (o.count_only) f.count_only = true;
  if (o.limit !== undefined) {
    if (!isUint(o.limit) || o.limit > 4294967295) throw new ProtocolError('presence limit must be a non-negative integer');
    f.limit = o.limit;
  }
  if (o.cursor !== undefined && o.cursor !== '') {
    if (typeof o.cursor !== 'string') throw new ProtocolError('presence cursor must be a string');
    f.cursor = o.cursor;
  }
  return JSON.stringify(f);
}

// unsub(id, pattern): drop the subscription with exactly this pattern string.
export function unsub(id, pattern) {
  return JSON.stringify(frame('unsub', id, pattern));
}

// pub(id, subject, data, opts): publish. data is a string (a text message,
// sent as "data") unless opts.b64 is true, in which case data is already
// standard base64 (a binary message, sent as "data_b64"). opts.headers is an
// object of string values; opts.ack asks for an ACK. id may be undefined
// (0 on the wire) for fire-and-forget publishes.
export function pub(id, subject, data, opts) {
  const o = opts || {};
  const f = frame('pub', id, subject);
  if (typeof data !== 'string') {
    throw new ProtocolError('pub data must be a string (text, or base64 with opts.b64), got ' + typeof data);
  }
  if (o.b64) {
    if (!isBase64(data)) throw new ProtocolError('pub data_b64 is not standard padded base64');
    f.data_b64 = data;
  } else {
    f.data = data;
  }
  if (o.headers !== undefined) {
    if (o.headers === null || typeof o.headers !== 'object' || Array.isArray(o.headers)) {
      throw new ProtocolError('pub headers must be an object of strings');
    }
    const keys = Object.keys(o.headers);
    for (let i = 0; i < keys.length; i++) {
      if (typeof o.headers[keys[i]] !== 'string') {
        throw new ProtocolError('pub header ' + keys[i] + ' must be a string');
      }
    }
    f.headers = o.headers;
  }
  if (o.ack) f.ack = true;
  return JSON.stringify(f);
}

// ping(id): protocol-level ping; the server answers PONG with the same id.
export function ping(id) {
  return JSON.stringify(frame('ping', id));
}

// ---------------------------------------------------------------- parser

function isBase64(s) {
  return s.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(s);
}

function isUint(v) {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function fail(raw, what) {
  throw new ProtocolError('bad server frame: ' + what, raw);
}

function checkKeys(raw, obj, allowed, where) {
  const keys = Object.keys(obj);
  for (let i = 0; i < keys.length; i++) {
    if (allowed.indexOf(keys[i]) < 0) fail(raw, where + ' has unknown field "' + keys[i] + '"');
  }
}

// rawTs returns the exact decimal digits of a MSG frame's "ts" (Unix ns), or
// "" if there is none. JSON.parse rounds ts (it exceeds 2^53); this reads it
// from the text. ts is the last field of a MSG (pb.AppendServerJSON), so an
// anchored match cannot be fooled by a payload that contains "ts":.
export function rawTs(text) {
  const m = /,"ts":(\d+)\}\s*$/.exec(text);
  return m ? m[1] : '';
}

// checkMember validates a presence member object (in place).
function checkMember(raw, m, where) {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) fail(raw, where + ' must be an object');
  checkKeys(raw, m, MEMBER_FIELDS.required.concat(MEMBER_FIELDS.optional), where);
  for (let i = 0; i < 3; i++) {
    const k = MEMBER_FIELDS.required[i];
    if (typeof m[k] !== 'string') fail(raw, where + '.' + k + ' must be a string');
  }
  if (typeof m.joined_at !== 'number' || !Number.isInteger(m.joined_at)) fail(raw, where + '.joined_at must be an integer');
  if (m.info !== undefined && (m.info === null || typeof m.info !== 'object' || Array.isArray(m.info))) {
    fail(raw, where + '.info must be an object');
  }
}

// parse(text) validates one server frame and returns it as an object:
//   {op:'welcome', session_id, node_id, tenant, user, limits:{...}, heartbeat_interval_ms, protocol_version}
//   {op:'msg', subject, data?|data_b64?, binary, headers?, trace_id?, ts?, ts_raw}
//   {op:'ack', id} | {op:'pong', id} | {op:'error', id (0 if absent), code, message}
//   {op:'presence', id, subject, members? (absent for count_only), count, users, cursor (''  on the last page)}
//   {op:'presence_update', subject, member:{user, session, node, joined_at, info?}}
//   {op:'presence_leave', subject, member:{...}, reason}
// It throws ProtocolError for a binary frame, malformed JSON, an unknown op,
// a missing required field, a field of the wrong type or an unknown field
// (unknown fields of the frame itself are allowed with opts.lenient).
export function parse(text, opts) {
  const lenient = !!(opts && opts.lenient);
  if (typeof text !== 'string') {
    fail(text, 'not a text frame (binary frames mean the connection uses the Protobuf codec)');
  }
  let f;
  try {
    f = JSON.parse(text);
  } catch (e) {
    fail(text, 'malformed JSON: ' + e.message);
  }
  if (f === null || typeof f !== 'object' || Array.isArray(f)) fail(text, 'not a JSON object');
  if (typeof f.op !== 'string') fail(text, 'missing op');
  const shape = SHAPES[f.op];
  if (!shape || !Object.prototype.hasOwnProperty.call(SHAPES, f.op)) fail(text, 'unknown op "' + f.op + '"');
  if (!lenient) checkKeys(text, f, ['op'].concat(shape.required, shape.optional), f.op);
  for (let i = 0; i < shape.required.length; i++) {
    if (f[shape.required[i]] === undefined) fail(text, f.op + ' lacks "' + shape.required[i] + '"');
  }
  switch (f.op) {
    case 'ack':
    case 'pong':
      if (!isUint(f.id)) fail(text, f.op + ' id must be a non-negative integer');
      break;
    case 'error':
      if (f.id === undefined) f.id = 0;
      else if (!isUint(f.id)) fail(text, 'error id must be a non-negative integer');
      if (typeof f.code !== 'string' || ERROR_CODES.indexOf(f.code) < 0) fail(text, 'unknown error code ' + JSON.stringify(f.code));
      if (typeof f.message !== 'string') fail(text, 'error message must be a string');
      break;
    case 'msg':
      if (typeof f.subject !== 'string' || f.subject === '') fail(text, 'msg subject must be a non-empty string');
      if (f.data !== undefined && f.data_b64 !== undefined) fail(text, 'msg has both data and data_b64');
      if (f.data === undefined && f.data_b64 === undefined) fail(text, 'msg has neither data nor data_b64');
      if (f.data !== undefined && typeof f.data !== 'string') fail(text, 'msg data must be a string');
      if (f.data_b64 !== undefined && (typeof f.data_b64 !== 'string' || !isBase64(f.data_b64))) {
        fail(text, 'msg data_b64 must be standard padded base64');
      }
      f.binary = f.data_b64 !== undefined;
      if (f.headers !== undefined) {
        if (f.headers === null || typeof f.headers !== 'object' || Array.isArray(f.headers)) fail(text, 'msg headers must be an object');
        const hk = Object.keys(f.headers);
        for (let i = 0; i < hk.length; i++) {
          if (typeof f.headers[hk[i]] !== 'string') fail(text, 'msg header ' + hk[i] + ' must be a string');
        }
      }
      if (f.trace_id !== undefined && typeof f.trace_id !== 'string') fail(text, 'msg trace_id must be a string');
      if (f.ts !== undefined && !isUint(f.ts)) fail(text, 'msg ts must be a non-negative integer');
      f.ts_raw = f.ts === undefined ? '' : rawTs(text);
      break;
    case 'presence':
      if (!isUint(f.id)) fail(text, 'presence id must be a non-negative integer');
      if (typeof f.subject !== 'string' || f.subject === '') fail(text, 'presence subject must be a non-empty string');
      if (!isUint(f.count) || !isUint(f.users)) fail(text, 'presence count and users must be non-negative integers');
      if (f.members !== undefined) {
        if (!Array.isArray(f.members)) fail(text, 'presence members must be an array');
        for (let i = 0; i < f.members.length; i++) checkMember(text, f.members[i], 'presence members[' + i + ']');
      }
      if (f.cursor === undefined) f.cursor = '';
      else if (typeof f.cursor !== 'string' || f.cursor === '') fail(text, 'presence cursor must be a non-empty string');
      break;
    case 'presence_update':
    case 'presence_leave':
      if (typeof f.subject !== 'string' || f.subject === '') fail(text, f.op + ' subject must be a non-empty string');
      checkMember(text, f.member, f.op + ' member');
      if (f.op === 'presence_leave' && (typeof f.reason !== 'string' || f.reason === '')) {
        fail(text, 'presence_leave reason must be a non-empty string');
      }
      break;
    case 'welcome': {
      const strs = ['session_id', 'node_id', 'tenant', 'user'];
      for (let i = 0; i < strs.length; i++) {
        if (typeof f[strs[i]] !== 'string') fail(text, 'welcome ' + strs[i] + ' must be a string');
      }
      if (f.session_id === '' || f.tenant === '') fail(text, 'welcome session_id and tenant must not be empty');
      const l = f.limits;
      if (l === null || typeof l !== 'object' || Array.isArray(l)) fail(text, 'welcome limits must be an object');
      checkKeys(text, l, LIMIT_FIELDS, 'welcome limits');
      for (let i = 0; i < LIMIT_FIELDS.length; i++) {
        if (!isUint(l[LIMIT_FIELDS[i]])) fail(text, 'welcome limits.' + LIMIT_FIELDS[i] + ' must be a non-negative integer');
      }
      if (!isUint(f.heartbeat_interval_ms)) fail(text, 'welcome heartbeat_interval_ms must be a non-negative integer');
      if (!isUint(f.protocol_version)) fail(text, 'welcome protocol_version must be a non-negative integer');
      break;
    }
  }
  return f;
}

// tryParse is parse() that returns {frame} or {error} instead of throwing,
// for hot paths in k6 handlers where one bad frame should be counted, not
// abort the VU.
export function tryParse(text) {
  try {
    return { frame: parse(text), error: null };
  } catch (e) {
    return { frame: null, error: e };
  }
}

// isReply reports whether f answers the request with this id (ACK, PONG, a
// presence answer or an ERROR carrying the id).
export function isReply(f, id) {
  return (f.op === 'ack' || f.op === 'pong' || f.op === 'error' || f.op === 'presence') && f.id === id;
}

// isPresenceEvent reports whether f is a join or leave in a room (optionally
// this room).
export function isPresenceEvent(f, room) {
  return (f.op === 'presence_update' || f.op === 'presence_leave') && (room === undefined || f.subject === room);
}
