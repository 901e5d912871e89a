// One WebSocket session as every k6 scenario runs it: the connection
// settings (ARQ_URL, ARQ_TOKEN, ARQ_AUTH), the upgrade with the token in
// the query or an Authorization header, and the frame handling they share
// (strict parse, WELCOME first, optional SUB right after it, bad frames and
// unexpected closes counted).
//
// Plain ES2020 that imports only ./protocol.js and ./env.js, so node loads
// it too: k6's `ws` module and metric objects are passed in by the scripts,
// never imported here.

import * as arq from './protocol.js';
import { env } from './env.js';

// connection returns the settings every scenario reads at init:
// {url: ARQ_URL, token: ARQ_TOKEN, auth: ARQ_AUTH ('query' or 'header')}.
export function connection() {
  return {
    url: env('ARQ_URL', 'ws://127.0.0.1:8080'),
    token: env('ARQ_TOKEN', ''),
    auth: env('ARQ_AUTH', 'query'),
  };
}

// requireToken throws when conn has no token; setup() calls it, so a run
// without ARQ_TOKEN stops before any VU starts.
export function requireToken(conn) {
  if (!conn.token) throw new Error('set ARQ_TOKEN (TOKEN=$(arq token --tenant bench --sub k6 --ttl 2h))');
}

// dial opens one WebSocket with ws.connect (ws is the script's k6/ws) and
// returns k6's response. The token goes in ?token=, or with
// ARQ_AUTH=header in an Authorization: Bearer header.
export function dial(ws, conn, handler) {
  const header = conn.auth === 'header';
  const params = header ? { headers: { Authorization: 'Bearer ' + conn.token } } : {};
  return ws.connect(arq.socketURL(conn.url, header ? '' : conn.token), params, handler);
}

// UPGRADED is the check set for dial's response: check(res, UPGRADED).
export const UPGRADED = { 'upgrade status 101': (r) => r && r.status === 101 };

// onFrames installs the message, binaryMessage and (with
// h.unexpectedClose) close handlers of a k6/ws socket and returns
// {closing, close(code)}: close() is how the script closes the socket on
// purpose. Every text frame is parsed with arq.tryParse; now is arq.nowMs()
// at receive time. h:
//   badFrames            Counter for rejected frames, binary frames and a
//                        first frame that is not WELCOME (the socket closes)
//   isWelcome(f)         optional: accepts the first frame (default: op welcome)
//   welcome(f, now)      optional: runs once the WELCOME is in
//   subject              optional: SUB id 1 to it is sent after welcome()
//   subscribed(ms, now)  every ACK id 1 once that SUB is sent (ms: SUB -> ACK)
//   frame(f, now, text)  every other frame after the WELCOME
//   rejected(err, text)  optional: after a rejected text frame is counted
//   binary()             optional: after a binary frame is counted
//   unexpectedClose      optional Counter: closes not asked for with close()
export function onFrames(socket, h) {
  const s = {
    closing: false,
    close: function (code) {
      s.closing = true;
      // k6 reads an explicit undefined as close code 0
      if (code === undefined) socket.close();
      else socket.close(code);
    },
  };
  let welcomed = false;
  let subSent = 0;
  socket.on('message', function (text) {
    const now = arq.nowMs();
    const r = arq.tryParse(text);
    if (r.error) {
      h.badFrames.add(1);
      if (h.rejected) h.rejected(r.error, text);
      return;
    }
    const f = r.frame;
    if (!welcomed) {
      welcomed = h.isWelcome ? h.isWelcome(f) : f.op === 'welcome';
      if (!welcomed) {
        h.badFrames.add(1);
        s.close();
        return;
      }
      if (h.welcome) h.welcome(f, now);
      if (h.subject) {
        subSent = arq.nowMs();
        socket.send(arq.sub(1, h.subject));
      }
      return;
    }
    if (h.subject && f.op === 'ack' && f.id === 1) {
      h.subscribed(now - subSent, now);
      return;
    }
    h.frame(f, now, text);
  });
  socket.on('binaryMessage', function () {
    h.badFrames.add(1);
    if (h.binary) h.binary();
  });
  if (h.unexpectedClose) {
    socket.on('close', function () {
      if (!s.closing) h.unexpectedClose.add(1);
    });
  }
  return s;
}
