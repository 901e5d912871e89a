// A node-only stand-in for k6/ws that lets k6/test/simulate.test.mjs run the
// scenarios' VU functions for real: `ws.connect(url, params, fn)` builds a
// FakeSocket, calls fn(socket), then runs the socket's event loop
// synchronously (as k6 does: connect returns when the socket closes),
// sleeping for real until the next timer is due, so Date.now() and the
// scripts' timers agree. The "server" behind it is a tiny in-process model
// of the gateway's JSON protocol (per-connection subscriptions with NATS
// wildcards, ACK/ERROR/PONG, MSG with headers/trace_id/ts), good enough to
// exercise every handler path of the scripts. It is not the gateway: the
// live contract is checked against `arq serve` in live.test.mjs.
//
// FakeBus.retain makes publishes on a subject replay to a later subscriber,
// so a publisher VU and then a subscriber VU can run one after the other.
//
// Presence: a sub with "presence" makes the socket a member of the room
// (presence_update to every member, itself included; presence_leave
// "unsubscribe"/"close" to the others when it leaves); "presence" queries
// are answered from the bus's rooms, paged by session like the brain.
// FakeBus.presetMembers puts that many other members in every room (sockets
// run one at a time, so this is how a VU sees company and paging);
// FakeBus.presenceDown answers every query UNAVAILABLE.

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms) {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}

function nowNs() {
  const ms = performance.timeOrigin + performance.now();
  return (BigInt(Math.floor(ms)) * 1000000n + BigInt(Math.round((ms % 1) * 1e6))).toString();
}

function validSubject(s, pattern) {
  if (typeof s !== 'string' || s === '' || s.length > 256) return 'empty subject';
  const toks = s.split('.');
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (t === '') return 'empty token';
    if (t === '*' || t === '>') {
      if (!pattern) return 'wildcard in publish subject';
      if (t === '>' && i !== toks.length - 1) return 'bad wildcard';
    } else if (t.includes('*') || t.includes('>')) {
      return 'bad wildcard';
    }
  }
  return '';
}

function matches(pattern, subject) {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

export class FakeBus {
  constructor(opts = {}) {
    this.tenant = opts.tenant || 'bench';
    this.retain = !!opts.retain;
    // (frameObject) => frameObject | string | null: inject drift or loss
    this.corrupt = opts.corrupt || null;
    this.reject = opts.reject || 0; // HTTP status for every upgrade (401, 503, ...)
    this.retained = []; // [{subject, frame}]
    this.sockets = [];
    this.maxSessionMs = opts.maxSessionMs || 20000;
    this.presetMembers = opts.presetMembers || 0;
    this.presenceDown = !!opts.presenceDown;
    this.rooms = new Map(); // room -> Map(session -> {member, socket})
  }

  room(subject) {
    let r = this.rooms.get(subject);
    if (!r) {
      r = new Map();
      for (let i = 0; i < this.presetMembers; i++) {
        const session = 'preset' + String(i).padStart(4, '0');
        r.set(session, { member: { user: 'user' + (i % 3), session, node: 'node-sim', joined_at: Date.now() }, socket: null });
      }
      this.rooms.set(subject, r);
    }
    return r;
  }

  presenceEvent(subject, frame) {
    for (const m of this.room(subject).values()) if (m.socket && !m.socket.closed) m.socket.reply(frame);
  }

  connect(url, params, fn) {
    if (!/^wss?:\/\/[^/]+\/v1\/socket(\?|$)/.test(url)) throw new Error('k6-sim: bad url ' + url);
    const header = params && params.headers && params.headers.Authorization;
    if (!/[?&]token=[^&]+/.test(url) && !(header && /^Bearer \S+$/.test(header))) {
      return { status: 401, url };
    }
    if (this.reject) return { status: this.reject, url };
    const s = new FakeSocket(this);
    this.sockets.push(s);
    fn(s);
    s.run();
    return { status: 101, url };
  }
}

class FakeSocket {
  constructor(bus) {
    this.bus = bus;
    this.handlers = {};
    this.timers = [];
    this.inbox = [];
    this.subs = [];
    this.sent = [];
    this.closed = false;
    this.closeCode = 0;
    this.seq = 0;
    this.session = '';
    this.rooms = []; // presence memberships
  }

  leave(subject, reason) {
    const r = this.bus.room(subject);
    const m = r.get(this.session);
    if (!m) return;
    r.delete(this.session);
    this.rooms.splice(this.rooms.indexOf(subject), 1);
    this.bus.presenceEvent(subject, { op: 'presence_leave', subject, member: m.member, reason });
  }

  answer(id, f) {
    if (validSubject(f.subject, false)) return this.error(id, 'presence needs a literal subject');
    if (this.bus.presenceDown) return this.error(id, 'no presence brain answered', 'UNAVAILABLE');
    const all = [...this.bus.room(f.subject).values()].map((m) => m.member).sort((a, b) => (a.session < b.session ? -1 : 1));
    const users = new Set(all.map((m) => m.user)).size;
    const a = { op: 'presence', id, subject: f.subject };
    if (!f.count_only) {
      const limit = f.limit && f.limit < 1000 ? f.limit : 1000;
      const rest = f.cursor ? all.filter((m) => m.session > f.cursor) : all;
      a.members = rest.slice(0, limit);
      if (rest.length > limit) a.cursor = a.members[a.members.length - 1].session;
    }
    a.count = all.length;
    a.users = users;
    if (a.cursor !== undefined) {
      const c = a.cursor;
      delete a.cursor;
      a.cursor = c; // wire order: cursor last
    }
    return this.reply(a);
  }

  on(ev, fn) {
    (this.handlers[ev] = this.handlers[ev] || []).push(fn);
  }

  emit(ev, arg) {
    for (const fn of this.handlers[ev] || []) fn(arg);
  }

  setTimeout(fn, ms) {
    this.timers.push({ fn, at: Date.now() + ms, every: 0, seq: this.seq++ });
  }

  setInterval(fn, ms) {
    if (!(ms > 0)) throw new Error('k6-sim: setInterval needs a positive interval');
    this.timers.push({ fn, at: Date.now() + ms, every: ms, seq: this.seq++ });
  }

  ping() {}

  close(code) {
    if (this.closed) return;
    this.closed = true;
    this.closeCode = code || 1001;
  }

  // reply queues a server frame (object in wire order) as JSON text.
  reply(obj, tsNs) {
    let f = obj;
    if (this.bus.corrupt) f = this.bus.corrupt(f);
    if (f === null) return; // dropped
    let text = typeof f === 'string' ? f : JSON.stringify(f);
    if (tsNs) text = text.slice(0, -1) + ',"ts":' + tsNs + '}';
    this.inbox.push(text);
  }

  error(id, msg, code) {
    const e = { op: 'error' };
    if (id) e.id = id;
    e.code = code || 'VALIDATION_ERROR';
    e.message = msg;
    this.reply(e);
  }

  deliver(subject, frame) {
    if (this.closed || !this.subs.some((p) => matches(p, subject))) return;
    this.reply(frame.obj, frame.ts);
  }

  send(text) {
    if (this.closed) throw new Error('k6-sim: send on a closed socket');
    if (typeof text !== 'string') throw new Error('k6-sim: send needs a string');
    this.sent.push(text);
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return this.error(0, 'malformed JSON');
    }
    const id = f.id || 0;
    switch (f.op) {
      case 'sub': {
        const bad = validSubject(f.subject, true);
        if (bad) return this.error(id, 'invalid subject: ' + bad);
        if (f.presence) {
          if (validSubject(f.subject, false)) return this.error(id, 'presence needs a literal subject');
          if (f.info !== undefined && JSON.stringify(f.info).length > 256) return this.error(id, 'info too large (at most 256 bytes)');
        }
        if (!this.subs.includes(f.subject)) this.subs.push(f.subject);
        this.reply({ op: 'ack', id });
        if (f.presence && !this.rooms.includes(f.subject)) {
          this.rooms.push(f.subject);
          const member = { user: 'k6', session: this.session, node: 'node-sim', joined_at: Date.now() };
          if (f.info !== undefined) member.info = f.info;
          this.bus.room(f.subject).set(this.session, { member, socket: this });
          this.bus.presenceEvent(f.subject, { op: 'presence_update', subject: f.subject, member });
        }
        if (this.bus.retain) {
          for (const r of this.bus.retained) if (matches(f.subject, r.subject)) this.reply(r.frame.obj, r.frame.ts);
        }
        return;
      }
      case 'unsub': {
        const i = this.subs.indexOf(f.subject);
        if (i < 0) return this.error(id, 'not subscribed to ' + f.subject);
        this.subs.splice(i, 1);
        if (this.rooms.includes(f.subject)) this.leave(f.subject, 'unsubscribe');
        return this.reply({ op: 'ack', id });
      }
      case 'pub': {
        const bad = validSubject(f.subject, false);
        if (bad) return this.error(id, 'invalid subject: ' + bad);
        if (f.data !== undefined && f.data_b64 !== undefined) return this.error(id, 'frame has both data and data_b64');
        const obj = { op: 'msg', subject: f.subject };
        if (f.data !== undefined) obj.data = f.data;
        else obj.data_b64 = f.data_b64 || '';
        if (f.headers) {
          obj.headers = f.headers;
          if (f.headers['trace-id'] !== undefined) obj.trace_id = f.headers['trace-id'];
        }
        const frame = { obj, ts: nowNs() };
        for (const s of this.bus.sockets) s.deliver(f.subject, frame);
        if (this.bus.retain) this.bus.retained.push({ subject: f.subject, frame });
        if (f.ack) this.reply({ op: 'ack', id });
        return;
      }
      case 'ping':
        return this.reply({ op: 'pong', id });
      case 'presence':
        return this.answer(id, f);
      default:
        return this.error(id, 'unknown op: ' + f.op);
    }
  }

  run() {
    const deadline = Date.now() + this.bus.maxSessionMs;
    this.bus.sessions = (this.bus.sessions || 0) + 1;
    this.session = 'sim' + this.bus.sessions;
    this.emit('open');
    this.reply({
      op: 'welcome', session_id: this.session, node_id: 'node-sim', tenant: this.bus.tenant, user: 'k6',
      limits: { max_frame_bytes: 1048576, max_subscriptions: 1024, outbound_buffer_bytes: 1048576, publish_rate: 10000, publish_burst: 2000 },
      heartbeat_interval_ms: 25000, protocol_version: 1,
    });
    while (!this.closed) {
      if (this.inbox.length) {
        this.emit('message', this.inbox.shift());
        continue;
      }
      if (Date.now() > deadline) throw new Error('k6-sim: session still open after ' + this.bus.maxSessionMs + ' ms');
      if (!this.timers.length) throw new Error('k6-sim: socket idle with no timers: it would never close');
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const t = this.timers[0];
      sleepMs(t.at - Date.now());
      if (t.every) t.at += t.every;
      else this.timers.shift();
      t.fn();
    }
    for (const r of [...this.rooms]) this.leave(r, 'close');
    this.bus.sockets.splice(this.bus.sockets.indexOf(this), 1);
    this.emit('close', this.closeCode);
  }
}
