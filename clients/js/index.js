// ArqonBus JavaScript client: one ES module, no dependencies, for browsers
// (and node >= 22 or any runtime with a WHATWG WebSocket; pass one in with
// options.WebSocket elsewhere, e.g. the `ws` package on node 20).
//
//   import { ArqonClient } from '@arqonbus/client';
//   const c = new ArqonClient({ url: 'ws://127.0.0.1:8080', token: () => fetchToken() });
//   await c.connect();
//   const sub = c.subscribe('chat.>', (m) => console.log(m.subject, m.data));
//   await c.publish('chat.lobby', 'hello', { ack: true });
//
// The wire protocol is docs/PROTOCOL.md (JSON codec); frames are built and
// parsed by ./frames.js, shared with the k6 scenarios.

import * as frames from './frames.js';

export { frames };
export const VERSION = '0.1.0';

// ArqonError is what promises reject with: code is the server's error code
// (VALIDATION_ERROR, RATE_LIMIT_EXCEEDED, ...) or one of the client's own:
// NOT_CONNECTED, DISCONNECTED, TIMEOUT, CLOSED, AUTH (fatal auth failure).
export class ArqonError extends Error {
  constructor(code, message, id) {
    super(code + ': ' + message);
    this.name = 'ArqonError';
    this.code = code;
    this.serverMessage = message;
    if (id !== undefined) this.id = id;
  }
}

const DEFAULTS = {
  initialDelayMs: 250, // first reconnect: random in [0, 250)
  maxDelayMs: 30000, // backoff cap
  hintDelayMs: 1000, // 1001/1012 without an explicit hint: random in [0, 1000)
  tryAgainLaterMs: 5000, // 1013 without an explicit hint
  connectTimeoutMs: 10000, // open + WELCOME
  requestTimeoutMs: 10000, // ACK / PONG / presence answer
  pingIntervalMs: 0, // 0: half the server's heartbeat interval, at most 15 s
  pongTimeoutMs: 10000, // nothing received this long after a ping: dead connection
  tokenRefreshMs: 30000, // reconnect with a fresh token this long before exp
  iteratorBuffer: 1000, // messages an async iterator buffers (oldest dropped)
};

// Close codes after which the server asks us to come back (docs/PROTOCOL.md
// section 6: 1001 "server shutting down", "idle timeout"; 1012 service
// restart, 1013 try again later).
const HINT_CODES = { 1001: true, 1012: true, 1013: true };

// ---------------------------------------------------------------- helpers

// subjectMatches reports whether a NATS-style pattern matches a literal subject.
export function subjectMatches(pattern, subject) {
  if (pattern === subject) return true;
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

// tokenExpiry returns a JWT's exp in ms, or 0 when it cannot be read.
export function tokenExpiry(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((part.length + 3) % 4);
    const claims = JSON.parse(atob(b64));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

// reconnectHint reads an explicit delay from a close reason
// ("retry after 5s", "retry-after=500ms", "retry_after: 2"), in ms, or -1.
export function reconnectHint(reason) {
  const m = /retry[-_ ]?after\s*[=:]?\s*(\d+(?:\.\d+)?)\s*(ms|s)?/i.exec(String(reason || ''));
  if (!m) return -1;
  const n = parseFloat(m[1]);
  return m[2] && m[2].toLowerCase() === 'ms' ? n : n * 1000;
}

// backoffDelay: exponential backoff with full jitter (attempt from 0).
export function backoffDelay(attempt, initialMs, maxMs, rand) {
  const cap = Math.min(maxMs, initialMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor((rand || Math.random)() * cap);
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// nsToMs converts decimal Unix ns (exact digits, beyond 2^53) to ms.
function nsToMs(ns) {
  if (!ns || ns.length < 7) return 0;
  return parseInt(ns.slice(0, ns.length - 6), 10) + parseInt(ns.slice(ns.length - 6), 10) / 1e6;
}

function httpURL(wsURL) {
  return wsURL.replace(/^ws/, 'http');
}

// ---------------------------------------------------------------- Subscription

// Subscription is one subscribe() call: messages go to its callback and to
// its async iterator. For a presence room it also tracks the members.
export class Subscription {
  constructor(client, pattern, onMessage, opts) {
    this.client = client;
    this.pattern = pattern;
    this.presence = !!opts.presence;
    this.info = opts.info;
    this.onMessage = onMessage || null;
    this.onJoin = opts.onJoin || null;
    this.onLeave = opts.onLeave || null;
    this.onMembers = opts.onMembers || null;
    this.closed = false;
    // members: session id -> member (presence rooms; refreshed after each (re)subscribe)
    this.members = new Map();
    this.queue = [];
    this.waiting = [];
    this.dropped = 0;
    this.syncing = null; // events buffered while a members query is out
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  // count is the number of members (connections) of a presence room.
  get count() {
    return this.members.size;
  }

  // unsubscribe stops this subscription; the server subscription goes when
  // its last local subscription does. Resolves on the server's ACK.
  unsubscribe() {
    return this.client.unsubscribe(this);
  }

  deliver(m) {
    if (this.closed) return;
    if (this.onMessage) {
      try {
        this.onMessage(m, this);
      } catch (e) {
        this.client.emit('error', e);
      }
    }
    if (this.waiting.length) {
      this.waiting.shift()({ value: m, done: false });
    } else if (this.iterating) {
      if (this.queue.length >= this.client.opts.iteratorBuffer) {
        this.queue.shift();
        this.dropped++;
      }
      this.queue.push(m);
    }
  }

  presenceEvent(f) {
    // callbacks see the live feed at once; the member map is rebuilt from a
    // query after each (re)subscribe, with events that raced it reapplied
    if (this.syncing) this.syncing.push(f);
    this.applyEvent(f);
    if (f.op === 'presence_update' && this.onJoin) this.safe(this.onJoin, f.member);
    if (f.op === 'presence_leave' && this.onLeave) this.safe(this.onLeave, f.member, f.reason);
    this.notifyMembers();
  }

  applyEvent(f) {
    if (f.op === 'presence_update') this.members.set(f.member.session, f.member);
    else this.members.delete(f.member.session);
  }

  notifyMembers() {
    if (this.onMembers) this.safe(this.onMembers, Array.from(this.members.values()));
  }

  safe(fn, a, b) {
    try {
      fn(a, b, this);
    } catch (e) {
      this.client.emit('error', e);
    }
  }

  // sync replaces the member list with a fresh query (after each ACK).
  async sync() {
    const buffered = [];
    this.syncing = buffered;
    try {
      const all = await this.client.presenceAll(this.pattern);
      this.members = new Map();
      for (const m of all.members) this.members.set(m.session, m);
    } catch (e) {
      this.client.emit('error', e);
    } finally {
      this.syncing = null;
    }
    // events that raced the query: joins are idempotent, leaves remove
    for (const f of buffered) this.applyEvent(f);
    this.notifyMembers();
  }

  end() {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    this.iterating = true;
    return {
      next: () => {
        if (this.queue.length) return Promise.resolve({ value: this.queue.shift(), done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiting.push(resolve));
      },
      return: () => {
        this.iterating = false;
        this.queue = [];
        if (!this.closed) this.unsubscribe().catch(() => {});
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

// ---------------------------------------------------------------- ArqonClient

export class ArqonClient {
  // options: see index.d.ts (url and token are required).
  constructor(options) {
    const o = Object.assign({}, DEFAULTS, options || {});
    if (!o.url) throw new TypeError('ArqonClient: options.url is required');
    if (o.token === undefined) throw new TypeError('ArqonClient: options.token is required (a string or a function)');
    this.opts = o;
    this.WebSocketImpl = o.WebSocket || globalThis.WebSocket;
    if (!this.WebSocketImpl) throw new TypeError('ArqonClient: no WebSocket implementation (pass options.WebSocket)');
    this.url = frames.socketURL(o.url);
    this.state = 'idle'; // idle | connecting | connected | disconnected | closed
    this.ws = null;
    this.welcome = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.subs = new Map(); // pattern -> {presence, info, list: [Subscription]}
    this.listeners = new Map();
    this.attempt = 0;
    this.timers = { reconnect: null, ping: null, pong: null, refresh: null, connect: null };
    this.stats = { sent: 0, received: 0, reconnects: 0 };
    this.currentToken = '';
    this.firstConnect = null;
    this.connectedOnce = false;
  }

  // ------------------------------------------------------------ events

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const s = this.listeners.get(event);
    if (s) s.delete(fn);
  }

  emit(event, arg) {
    const s = this.listeners.get(event);
    if (!s || s.size === 0) return;
    for (const fn of Array.from(s)) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this.emit('error', e);
      }
    }
  }

  setState(state, detail) {
    this.state = state;
    this.emit('state', Object.assign({ state: state }, detail || {}));
    if (state !== 'closed') this.emit(state, detail || {});
  }

  // ------------------------------------------------------------ lifecycle

  // connect opens the connection (and keeps it open, reconnecting, until
  // close()). Resolves with the first WELCOME; rejects on a fatal auth error
  // or close() before that.
  connect() {
    if (this.state === 'closed') return Promise.reject(new ArqonError('CLOSED', 'client closed'));
    if (!this.firstConnect) {
      this.firstConnect = new Promise((resolve, reject) => {
        this.resolveFirst = resolve;
        this.rejectFirst = reject;
      });
      this.firstConnect.catch(() => {});
      this.open();
    }
    return this.firstConnect;
  }

  // close ends the connection for good: no reconnect, pending requests reject.
  close(code, reason) {
    if (this.state === 'closed') return;
    const ws = this.ws;
    this.teardown();
    if (ws) {
      try {
        ws.close(code || 1000, reason || 'client closed');
      } catch {
        // already closing
      }
    }
    this.finish(code || 1000, reason || 'client closed', false);
  }

  finish(code, reason, fatal) {
    this.clearTimers();
    this.failPending(new ArqonError(fatal ? 'AUTH' : 'CLOSED', reason));
    for (const e of this.subs.values()) for (const s of e.list) s.end();
    const wasOpen = this.state === 'connected' || this.state === 'connecting';
    this.state = 'closed';
    if (wasOpen || fatal) this.emit('disconnected', { code: code, reason: reason, willReconnect: false, fatal: !!fatal });
    this.emit('state', { state: 'closed', code: code, reason: reason, fatal: !!fatal });
    this.emit('closed', { code: code, reason: reason, fatal: !!fatal });
    if (this.rejectFirst && !this.connectedOnce) this.rejectFirst(new ArqonError(fatal ? 'AUTH' : 'CLOSED', reason));
  }

  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      this.timers[k] = null;
    }
  }

  failPending(err) {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  async token() {
    const t = this.opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  async open() {
    this.clearTimers();
    this.setState('connecting', { attempt: this.attempt });
    let token;
    try {
      token = await this.token();
    } catch (e) {
      this.emit('error', e);
      this.scheduleReconnect(4000, 'token function failed: ' + (e && e.message), -1);
      return;
    }
    if (this.state !== 'connecting') return; // closed meanwhile
    this.currentToken = token || '';
    const url = frames.socketURL(this.url, token);
    let ws;
    try {
      ws = new this.WebSocketImpl(url, frames.SUBPROTOCOL_JSON);
    } catch (e) {
      this.emit('error', e);
      this.scheduleReconnect(1006, 'cannot open: ' + (e && e.message), -1);
      return;
    }
    this.ws = ws;
    let opened = false;
    let openError = '';
    let authFailed = false; // ERROR AUTHENTICATION_FAILED seen on this socket
    this.timers.connect = setTimeout(() => {
      this.drop(ws, 4000, 'connect timeout');
    }, this.opts.connectTimeoutMs);
    ws.onopen = () => {
      opened = true;
    };
    ws.onerror = (ev) => {
      // node's ws reports the HTTP status of a refused upgrade here;
      // browsers say nothing (see probe below)
      openError = (ev && (ev.message || (ev.error && ev.error.message))) || openError;
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.stats.received++;
      this.alive();
      let f;
      try {
        f = frames.parse(typeof ev.data === 'string' ? ev.data : String(ev.data), { lenient: true });
      } catch (e) {
        this.emit('error', e);
        return;
      }
      if (f.op === 'error' && f.code === 'AUTHENTICATION_FAILED') authFailed = true;
      this.handle(f);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      const code = ev && ev.code ? ev.code : 1006;
      const reason = (ev && ev.reason) || (opened ? '' : openError || 'connection failed');
      this.ws = null;
      if (!opened) {
        this.openFailed(url, code, reason, openError);
        return;
      }
      if (authFailed || (code === 1008 && /token expired/.test(reason))) {
        // the token expired on an open connection: a fresh one from the
        // token function, or stop when there is no way to get one
        if (typeof this.opts.token !== 'function') {
          this.fatal(code, reason);
          return;
        }
        this.scheduleReconnect(code, reason, 0);
        return;
      }
      let hint = -1;
      if (HINT_CODES[code]) {
        const h = reconnectHint(reason);
        const base = h >= 0 ? h : code === 1013 ? this.opts.tryAgainLaterMs : this.opts.hintDelayMs;
        // no earlier than an explicit hint, spread over one more hint
        hint = (h >= 0 ? h : 0) + Math.floor(Math.random() * base);
        this.attempt = 0;
      }
      this.scheduleReconnect(code, reason, hint);
    };
  }

  // openFailed: the socket never opened. A 401 is fatal: seen directly in
  // node's ws error text, or found by a plain GET of the socket URL (the
  // gateway answers a non-upgrade request with the token's 401).
  async openFailed(url, code, reason, openError) {
    const m = /\b(401|403)\b/.exec(openError || '');
    if (m) {
      this.fatal(1008, 'HTTP ' + m[1] + ' at the upgrade' + (openError ? ': ' + openError : ''));
      return;
    }
    if (this.opts.probeAuth !== false && typeof fetch === 'function') {
      try {
        const ctl = typeof AbortController === 'function' ? new AbortController() : null;
        const t = setTimeout(() => ctl && ctl.abort(), 3000);
        const res = await fetch(httpURL(url), { cache: 'no-store', signal: ctl ? ctl.signal : undefined });
        clearTimeout(t);
        if (res.status === 401) {
          const body = (await res.text()).trim();
          this.fatal(1008, 'HTTP 401 at the upgrade: ' + body);
          return;
        }
      } catch {
        // server down, or a cross-origin page without CORS: not an auth error
      }
    }
    if (this.state === 'closed') return;
    this.scheduleReconnect(code, reason, -1);
  }

  fatal(code, reason) {
    if (this.state === 'closed') return;
    const ws = this.ws;
    this.teardown();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // ignore
      }
    }
    this.finish(code, reason, true);
  }

  teardown() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  // drop abandons a socket that is dead or too slow (no close handshake to
  // wait for) and reconnects.
  drop(ws, code, reason) {
    if (this.ws !== ws) return;
    this.teardown();
    try {
      ws.close(4000, reason);
    } catch {
      // ignore
    }
    this.scheduleReconnect(code, reason, -1);
  }

  // scheduleReconnect: hintMs < 0 means exponential backoff with full jitter.
  scheduleReconnect(code, reason, hintMs) {
    if (this.state === 'closed') return;
    this.clearTimers();
    this.failPending(new ArqonError('DISCONNECTED', reason || 'connection closed (' + code + ')'));
    const delay = hintMs >= 0 ? hintMs : backoffDelay(this.attempt, this.opts.initialDelayMs, this.opts.maxDelayMs);
    this.attempt++;
    this.setState('disconnected', { code: code, reason: reason, willReconnect: true, delayMs: delay });
    this.timers.reconnect = setTimeout(() => {
      this.stats.reconnects++;
      this.open();
    }, delay);
  }

  // ------------------------------------------------------------ frames in

  handle(f) {
    switch (f.op) {
      case 'welcome':
        this.onWelcome(f);
        return;
      case 'msg':
        this.onMsg(f);
        return;
      case 'presence_update':
      case 'presence_leave': {
        const e = this.subs.get(f.subject);
        if (e && e.presence) for (const s of e.list) s.presenceEvent(f);
        this.emit(f.op === 'presence_update' ? 'join' : 'leave', f);
        return;
      }
      case 'ack':
      case 'pong':
      case 'presence':
      case 'error': {
        const p = f.id ? this.pending.get(f.id) : undefined;
        if (p) {
          this.pending.delete(f.id);
          clearTimeout(p.timer);
          if (f.op === 'error') p.reject(new ArqonError(f.code, f.message, f.id));
          else p.resolve(f);
        } else if (f.op === 'error') {
          this.emit('error', new ArqonError(f.code, f.message, f.id));
        }
      }
    }
  }

  onWelcome(f) {
    clearTimeout(this.timers.connect);
    this.welcome = f;
    this.attempt = 0;
    const reconnect = this.connectedOnce;
    this.connectedOnce = true;
    this.setState('connected', { welcome: f, reconnect: reconnect });
    if (this.resolveFirst) {
      this.resolveFirst(f);
      this.resolveFirst = null;
    }
    this.startPing();
    this.scheduleRefresh();
    // resubscribe everything (with presence) on the new connection
    for (const [pattern, e] of this.subs) this.sendSub(pattern, e);
  }

  onMsg(f) {
    const m = {
      subject: f.subject,
      text: !f.binary,
      data: f.binary ? fromBase64(f.data_b64) : f.data,
      headers: f.headers || {},
      traceId: f.trace_id || '',
      ts: f.ts_raw || '',
      tsMs: nsToMs(f.ts_raw),
      receivedAt: Date.now(),
    };
    for (const [pattern, e] of this.subs) {
      if (subjectMatches(pattern, f.subject)) for (const s of e.list) s.deliver(m);
    }
    this.emit('message', m);
  }

  // ------------------------------------------------------------ keepalive

  // alive: anything received proves the connection; the pong timer restarts.
  alive() {
    if (this.timers.pong) {
      clearTimeout(this.timers.pong);
      this.timers.pong = null;
    }
  }

  startPing() {
    const hb = this.welcome && this.welcome.heartbeat_interval_ms;
    const every = this.opts.pingIntervalMs || Math.min(15000, hb ? Math.max(1000, hb / 2) : 15000);
    const ws = this.ws;
    const tick = () => {
      if (this.ws !== ws || this.state !== 'connected') return;
      this.sendRaw(frames.ping(this.id()));
      if (!this.timers.pong) {
        this.timers.pong = setTimeout(() => this.drop(ws, 4000, 'ping timeout'), this.opts.pongTimeoutMs);
      }
      this.timers.ping = setTimeout(tick, every);
    };
    this.timers.ping = setTimeout(tick, every);
  }

  scheduleRefresh() {
    if (typeof this.opts.token !== 'function' || !this.opts.tokenRefreshMs) return;
    const exp = tokenExpiry(this.currentToken);
    if (!exp) return;
    const ws = this.ws;
    const wait = Math.max(1000, exp - this.opts.tokenRefreshMs - Date.now());
    if (wait > 0x7fffffff) return;
    this.timers.refresh = setTimeout(() => {
      if (this.ws !== ws) return;
      // reconnect at once; open() asks the token function for a new token
      this.teardown();
      try {
        ws.close(1000, 'token refresh');
      } catch {
        // ignore
      }
      this.attempt = 0;
      this.scheduleReconnect(1000, 'token refresh', 0);
    }, wait);
  }

  // ------------------------------------------------------------ frames out

  id() {
    const id = this.nextId++;
    if (this.nextId > 0x7fffffff) this.nextId = 1;
    return id;
  }

  sendRaw(text) {
    const ws = this.ws;
    if (!ws || this.state !== 'connected') return false;
    ws.send(text);
    this.stats.sent++;
    return true;
  }

  // request sends a frame built for a fresh id and waits for its reply.
  request(build, timeoutMs) {
    if (this.state !== 'connected') {
      return Promise.reject(new ArqonError('NOT_CONNECTED', 'not connected (' + this.state + ')'));
    }
    const id = this.id();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ArqonError('TIMEOUT', 'no reply in ' + (timeoutMs || this.opts.requestTimeoutMs) + ' ms', id));
      }, timeoutMs || this.opts.requestTimeoutMs);
      this.pending.set(id, { resolve: resolve, reject: reject, timer: timer });
      try {
        this.sendRaw(build(id));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  // subscribe(pattern, onMessage?, opts?) returns a Subscription at once;
  // sub.ready resolves on the server's ACK (and again after reconnects the
  // client resubscribes by itself). opts.presence joins the room (a literal
  // subject) with opts.info; opts.onJoin/onLeave/onMembers follow it.
  subscribe(pattern, onMessage, opts) {
    if (typeof onMessage === 'object' && onMessage !== null && !opts) {
      opts = onMessage;
      onMessage = undefined;
    }
    const o = opts || {};
    if (this.state === 'closed') throw new ArqonError('CLOSED', 'client closed');
    const s = new Subscription(this, pattern, onMessage, o);
    let e = this.subs.get(pattern);
    if (e) {
      e.list.push(s);
      if (e.acked) {
        s.resolveReady(s);
        if (s.presence) s.sync();
      }
      return s;
    }
    e = { presence: !!o.presence, info: o.info, list: [s], acked: false };
    this.subs.set(pattern, e);
    if (this.state === 'connected') this.sendSub(pattern, e);
    return s;
  }

  sendSub(pattern, e) {
    e.acked = false;
    this.request((id) => frames.sub(id, pattern, e.presence ? { presence: true, info: e.info } : {}))
      .then(() => {
        if (this.subs.get(pattern) !== e) return;
        e.acked = true;
        for (const s of e.list) {
          s.resolveReady(s);
          if (s.presence) s.sync();
        }
      })
      .catch((err) => {
        if (this.subs.get(pattern) !== e) return;
        if (err.code === 'DISCONNECTED' || err.code === 'CLOSED' || err.code === 'NOT_CONNECTED' || err.code === 'AUTH') return;
        // refused by the server: the subscription is gone
        this.subs.delete(pattern);
        for (const s of e.list) {
          s.rejectReady(err);
          s.end();
        }
        this.emit('error', err);
      });
  }

  // unsubscribe(sub) removes one Subscription (resolves at once while
  // others share its pattern, else on the server's ACK).
  unsubscribe(s) {
    const e = this.subs.get(s.pattern);
    s.end();
    if (!e) return Promise.resolve();
    e.list = e.list.filter((x) => x !== s);
    if (e.list.length) return Promise.resolve();
    this.subs.delete(s.pattern);
    if (this.state !== 'connected') return Promise.resolve();
    return this.request((id) => frames.unsub(id, s.pattern)).then(() => undefined);
  }

  // publish(subject, data, opts?): data is a string (text) or a Uint8Array
  // (binary). Without opts.ack it resolves once written; with it on the
  // server's ACK, and rejects with ArqonError(code) on the server's ERROR.
  publish(subject, data, opts) {
    const o = opts || {};
    const bin = data instanceof Uint8Array || data instanceof ArrayBuffer;
    const payload = bin ? toBase64(data instanceof ArrayBuffer ? new Uint8Array(data) : data) : String(data === undefined ? '' : data);
    const fo = { b64: bin, headers: o.headers, ack: !!o.ack };
    if (o.ack) {
      return this.request((id) => frames.pub(id, subject, payload, fo), o.timeoutMs).then(() => undefined);
    }
    if (this.state !== 'connected') {
      return Promise.reject(new ArqonError('NOT_CONNECTED', 'not connected (' + this.state + ')'));
    }
    try {
      // an id lets a server ERROR (e.g. RATE_LIMIT_EXCEEDED) name the publish
      this.sendRaw(frames.pub(this.id(), subject, payload, fo));
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  // presence(room, opts?) is one page of a room's members:
  // {members, count, users, cursor} (cursor '' on the last page).
  presence(room, opts) {
    const o = opts || {};
    const q = {};
    if (o.countOnly) q.count_only = true;
    if (o.limit !== undefined) q.limit = o.limit;
    if (o.cursor) q.cursor = o.cursor;
    return this.request((id) => frames.presence(id, room, q), o.timeoutMs).then((f) => ({
      subject: f.subject,
      members: f.members || [],
      count: f.count,
      users: f.users,
      cursor: f.cursor || '',
    }));
  }

  // presenceAll follows the cursor through every page.
  async presenceAll(room, opts) {
    const o = opts || {};
    let cursor = '';
    const members = [];
    let last;
    for (let i = 0; i < 10000; i++) {
      last = await this.presence(room, { limit: o.limit, cursor: cursor });
      for (const m of last.members) members.push(m);
      cursor = last.cursor;
      if (!cursor) break;
    }
    return { subject: room, members: members, count: last.count, users: last.users, cursor: '' };
  }

  // count(room): {count, users} without the member list.
  count(room) {
    return this.presence(room, { countOnly: true }).then((a) => ({ count: a.count, users: a.users }));
  }

  // ping measures a protocol round trip in ms.
  ping() {
    const t0 = typeof performance !== 'undefined' ? performance.now() : Date.now();
    return this.request((id) => frames.ping(id)).then(() => (typeof performance !== 'undefined' ? performance.now() : Date.now()) - t0);
  }
}

export default ArqonClient;
