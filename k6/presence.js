// presence.js: presence rooms. VUS connections join ROOMS rooms as presence
// members (with a small info object), stay SESSION, leave by closing and
// join again, so every room sees a steady stream of joins and leaves. While
// in its room each connection queries it every QUERY_INTERVAL, alternating
// a count_only query and a full listing paged PAGE members at a time.
//
//   TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h)
//   k6 run -e ARQ_URL=ws://127.0.0.1:8080 -e ARQ_TOKEN=$TOKEN -e VUS=500 -e ROOMS=20 k6/presence.js
//
// Env: ARQ_URL, ARQ_TOKEN (required), ARQ_AUTH, VUS (100), ROOMS (10),
// DURATION (60s), SESSION (10s), QUERY_INTERVAL (1s), PAGE (100),
// P99_ACK_MS (5), P99_PRESENCE_JOIN_MS (50), P99_PRESENCE_QUERY_MS (20).
// See k6/README.md for what each threshold means.

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import * as arq from './lib/protocol.js';
import { envInt, envMs } from './lib/env.js';
import { SUMMARY_TREND_STATS, thresholds } from './lib/options.js';
import { connection, dial, onFrames, requireToken, UPGRADED } from './lib/session.js';

const CONN = connection();
const VUS = envInt('VUS', 100);
const ROOMS = Math.max(1, envInt('ROOMS', 10));
const DURATION_MS = envMs('DURATION', '60s');
const SESSION_MS = envMs('SESSION', '10s');
const QUERY_MS = envMs('QUERY_INTERVAL', '1s');
const PAGE = Math.min(arq.PRESENCE_LIMIT_MAX, Math.max(1, envInt('PAGE', 100)));

const subAckMs = new Trend('arq_sub_ack_ms', true);
const joinMs = new Trend('arq_presence_join_ms', true);
const queryMs = new Trend('arq_presence_query_ms', true);
const events = new Counter('arq_presence_events');
const unavailable = new Counter('arq_presence_unavailable');
const missing = new Counter('arq_presence_missing');
const missingReplies = new Counter('arq_missing_replies');
const badFrames = new Counter('arq_bad_frames');
const unexpectedCloses = new Counter('arq_unexpected_close');

export const options = {
  scenarios: {
    presence: {
      executor: 'constant-vus',
      vus: Math.max(1, VUS),
      duration: DURATION_MS + 'ms',
      gracefulStop: '10s',
      exec: 'member',
    },
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: thresholds(
    ['arq_sub_ack_ms', 'arq_presence_join_ms', 'arq_presence_query_ms', 'arq_presence_unavailable', 'arq_presence_missing',
      'arq_missing_replies', 'arq_bad_frames', 'arq_unexpected_close'],
    { checks: ['rate>0.999'] }
  ),
};

export function setup() {
  requireToken(CONN);
  return { run: 'r' + Date.now().toString(36), start: Date.now() };
}

// member is one session: join the VU's room, query it until the session
// ends, close (the other members see a "close" leave).
export function member(data) {
  const room = 'k6.presence.' + data.run + '.' + (__VU % ROOMS);
  const left = data.start + DURATION_MS - Date.now();
  const sessionMs = Math.max(1000, Math.min(SESSION_MS, left));
  let session = '';
  let subSent = 0;
  let joined = false;
  let nextId = 2;
  let queries = 0;
  let draining = false; // no new queries: their answers must arrive before the close
  // id -> {t, kind: 'count'|'list', seen (list: my session listed so far)}
  const pending = {};

  function query(kind, cursor, seen) {
    const id = nextId++;
    pending[id] = { t: arq.nowMs(), kind: kind, seen: !!seen };
    socket0.send(arq.presence(id, room, kind === 'count' ? { count_only: true } : { limit: PAGE, cursor: cursor }));
  }

  let socket0 = null;
  const res = dial(ws, CONN, function (socket) {
    socket0 = socket;
    const s = onFrames(socket, {
      badFrames: badFrames,
      unexpectedClose: unexpectedCloses,
      isWelcome: (f) => check(f, { 'first frame is welcome': (x) => x.op === 'welcome' && x.protocol_version === arq.PROTOCOL_VERSION }),
      welcome: function (f) {
        session = f.session_id;
        subSent = arq.nowMs();
        pending[1] = { t: subSent, kind: 'sub' };
        socket.send(arq.presenceSub(1, room, { vu: __VU, iter: __ITER }));
        // A query is answered within the gateway's 2 s query timeout
        // (UNAVAILABLE at worst): stop asking that long before closing.
        const drainMs = Math.min(2500, Math.floor(sessionMs / 2));
        socket.setTimeout(function () {
          draining = true;
        }, sessionMs - drainMs);
        socket.setTimeout(function () {
          if (!joined) missing.add(1); // our own join never came
          s.close();
        }, sessionMs);
      },
      frame: function (f, now) {
        if (arq.isPresenceEvent(f)) {
          if (f.subject !== room || (f.op === 'presence_leave' && arq.LEAVE_REASONS.indexOf(f.reason) < 0)) {
            badFrames.add(1);
            return;
          }
          events.add(1, { op: f.op });
          if (f.op === 'presence_update' && f.member.session === session && !joined) {
            joined = true;
            joinMs.add(now - subSent);
            socket.setInterval(function () {
              if (!draining) query(queries++ % 2 === 0 ? 'count' : 'list', '', false);
            }, QUERY_MS);
          }
          return;
        }
        const p = f.id !== undefined ? pending[f.id] : undefined;
        if (!p) {
          badFrames.add(1); // nothing publishes to the rooms
          return;
        }
        delete pending[f.id];
        if (f.op === 'error') {
          if (f.code === 'UNAVAILABLE') unavailable.add(1);
          else badFrames.add(1);
          return;
        }
        if (p.kind === 'sub') {
          if (f.op !== 'ack') badFrames.add(1);
          else subAckMs.add(now - p.t);
          return;
        }
        if (f.op !== 'presence' || f.subject !== room) {
          badFrames.add(1);
          return;
        }
        queryMs.add(now - p.t);
        if (p.kind === 'count') {
          if (f.members !== undefined || f.count < 1 || f.users < 1 || f.users > f.count) badFrames.add(1);
          return;
        }
        if (f.members === undefined || f.members.length > PAGE) {
          badFrames.add(1);
          return;
        }
        let seen = p.seen;
        for (let i = 0; i < f.members.length; i++) {
          if (f.members[i].session === session) seen = true;
        }
        if (f.cursor !== '') query('list', f.cursor, seen);
        else if (!seen) missing.add(1); // a member missing from its room's listing
      },
    });
    socket.on('error', function (e) {
      if (!s.closing) console.warn('presence: vu ' + __VU + ': ' + (e && e.error ? e.error() : e));
    });
  });
  check(res, UPGRADED);
  missingReplies.add(Object.keys(pending).length);
}
