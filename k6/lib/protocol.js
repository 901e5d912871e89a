// ArqonBus JSON protocol (v1) for k6 scripts and node tests.
//
// The frame code (builders, parse, constants) lives in
// clients/js/frames.js and is shared with the JavaScript client; this module
// re-exports it and adds the latency stamp helpers the k6 scenarios use.
// Both files must stay loadable by k6 and node: no node built-ins, no k6
// modules, no syntax newer than ES2020 (the syntax check in
// scripts/k6-check.sh enforces the last two, on both files). k6 resolves
// the relative import, so run k6 from a checkout (not from a copy of k6/).

export * from '../../clients/js/frames.js';
import { ProtocolError } from '../../clients/js/frames.js';

function isUint(v) {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

// ---------------------------------------------------------------- latency
//
// Payload stamp. A publisher that wants delivery latency measured sends
//
//     arq1 <seq> <sent>[ <tag>][ <padding>]
//
// as the text "data": the literal "arq1", the publisher's sequence number
// (decimal, from 1), the send time as a decimal Unix timestamp that is
// either milliseconds (<= 16 integer digits, optionally with a fraction:
// "1795782155251.25") or nanoseconds (17-19 digits, e.g. a Go publisher's
// time.Now().UnixNano()), optionally a tag naming the publisher
// ([A-Za-z0-9_:-], so a receiver can follow several publishers' sequences),
// and optionally padding ('.' characters) to reach a payload size. Example:
// "arq1 42 1795782155251.25 vu7 ......". A receiver computes
//
//     latency_ms = receive_ms - sent_ms
//
// which is meaningful when publisher and subscriber share a clock (one k6
// process, or one host). The gateway's MSG "ts" (Unix ns at publish
// accept) splits that into publish -> gateway and gateway -> receiver.

const STAMP_PREFIX = 'arq1 ';

// nowMs returns the current Unix time in milliseconds, with a fraction where
// the runtime has a monotonic high-resolution clock (node; k6 versions with
// performance.now), else Date.now().
export function nowMs() {
  if (typeof performance !== 'undefined' && performance && typeof performance.now === 'function' &&
      typeof performance.timeOrigin === 'number' && performance.timeOrigin > 0) {
    return performance.timeOrigin + performance.now();
  }
  return Date.now();
}

// stamp(seq, sentMs, size, tag) builds a stamped payload. sentMs defaults
// to nowMs(); size (optional) pads it with '.' to at least that many bytes;
// tag (optional) names the publisher.
export function stamp(seq, sentMs, size, tag) {
  const t = sentMs === undefined ? nowMs() : sentMs;
  if (typeof t !== 'number' || !(t > 0)) throw new ProtocolError('stamp sentMs must be a positive number');
  return stampWith(seq, formatMs(t), size, tag);
}

// stampNs is stamp() with the send time given as a decimal Unix-ns string
// (exact; no float rounding), as a Go publisher would write it.
export function stampNs(seq, sentNs, size, tag) {
  if (!/^\d{17,19}$/.test(String(sentNs))) throw new ProtocolError('stampNs sentNs must be 17-19 decimal digits');
  return stampWith(seq, String(sentNs), size, tag);
}

function stampWith(seq, sent, size, tag) {
  if (!isUint(seq)) throw new ProtocolError('stamp seq must be a non-negative integer');
  let s = STAMP_PREFIX + seq + ' ' + sent;
  if (tag !== undefined && tag !== '') {
    if (!/^[A-Za-z0-9_:-]+$/.test(String(tag))) throw new ProtocolError('stamp tag must match [A-Za-z0-9_:-]+');
    s += ' ' + tag;
  }
  if (size && s.length + 1 < size) s += ' ' + repeat('.', size - s.length - 1);
  return s;
}

// readStamp parses a stamped payload: {seq, sentMs, tag} (tag '' when
// absent), or null if data is not a stamp (so a script can ignore foreign
// messages).
export function readStamp(data) {
  if (typeof data !== 'string' || data.indexOf(STAMP_PREFIX) !== 0) return null;
  const m = /^arq1 (\d+) (\d+(?:\.\d+)?)(?: ([A-Za-z0-9_:-]+))?(?: \.*)?$/.exec(data);
  if (!m) return null;
  const sentMs = timeToMs(m[2]);
  if (sentMs === null) return null;
  return { seq: parseInt(m[1], 10), sentMs: sentMs, tag: m[3] || '' };
}

// timeToMs converts a decimal Unix timestamp string in ms (<= 16 integer
// digits, optional fraction) or ns (17-19 digits) to milliseconds, keeping
// sub-ms precision for ns without BigInt. Returns null for anything else.
export function timeToMs(s) {
  const str = String(s);
  if (/^\d{1,16}(\.\d+)?$/.test(str)) return parseFloat(str);
  if (/^\d{17,19}$/.test(str)) {
    // split so both halves are exact doubles
    return parseInt(str.slice(0, str.length - 6), 10) + parseInt(str.slice(str.length - 6), 10) / 1e6;
  }
  return null;
}

// serverTsMs returns a parsed MSG's gateway accept time in ms (exact, from
// ts_raw when present), or null.
export function serverTsMs(f) {
  if (!f || f.op !== 'msg' || f.ts === undefined) return null;
  if (f.ts_raw) return timeToMs(f.ts_raw);
  return f.ts / 1e6;
}

// latencyMs returns recvMs - sentMs, or null when either is missing or the
// difference is negative beyond clock jitter (clocks not shared).
export function latencyMs(sentMs, recvMs) {
  if (typeof sentMs !== 'number' || typeof recvMs !== 'number') return null;
  const d = recvMs - sentMs;
  if (d < -1) return null;
  return d < 0 ? 0 : d;
}

// deliveryLatencyMs is the one call k6 handlers use: given a parsed MSG and
// the receive time, {seq, tag, total, toGateway, fromGateway} in ms (the last two
// null without ts), or null if the payload carries no stamp.
export function deliveryLatencyMs(f, recvMs) {
  if (!f || f.op !== 'msg' || f.data === undefined) return null;
  const st = readStamp(f.data);
  if (!st) return null;
  const gw = serverTsMs(f);
  return {
    seq: st.seq,
    tag: st.tag,
    total: latencyMs(st.sentMs, recvMs),
    toGateway: gw === null ? null : latencyMs(st.sentMs, gw),
    fromGateway: gw === null ? null : latencyMs(gw, recvMs),
  };
}

function formatMs(t) {
  // at most 3 fractional digits (microseconds); integer ms stay integers
  const r = Math.round(t * 1000) / 1000;
  return String(r).indexOf('e') >= 0 ? r.toFixed(3) : String(r);
}

function repeat(c, n) {
  return n > 0 ? new Array(n + 1).join(c) : '';
}
