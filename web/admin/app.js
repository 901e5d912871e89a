// The ArqonBus admin page: polls /admin/api/status once a second and draws
// it. Read-only. With server.admin_token set, the token typed here is kept
// in sessionStorage and sent as "Authorization: Bearer".
const $ = (id) => document.getElementById(id);
const N = 120; // points per chart
const hist = { connections: [], subscriptions: [], in: [], out: [] };
let last = null;

function push(k, v) {
  hist[k].push(v);
  if (hist[k].length > N) hist[k].shift();
}

function spark(id, data) {
  const svg = $(id);
  const max = Math.max(1, ...data);
  const pts = data.map((v, i) => ((i * 120) / (N - 1)).toFixed(1) + ',' + (29 - (v / max) * 27).toFixed(1)).join(' ');
  let pl = svg.querySelector('polyline');
  if (!pl) {
    pl = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    svg.appendChild(pl);
  }
  pl.setAttribute('points', pts);
}

function fmt(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function dl(id, obj) {
  const el = $(id);
  el.textContent = '';
  const keys = Object.keys(obj).sort();
  if (!keys.length) {
    const dt = document.createElement('dt');
    dt.textContent = 'none';
    el.appendChild(dt);
    el.appendChild(document.createElement('dd'));
  }
  for (const k of keys) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = typeof obj[k] === 'number' ? fmt(obj[k]) : String(obj[k]);
    dd.dataset.key = k;
    el.appendChild(dt);
    el.appendChild(dd);
  }
}

function uptime(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return 'up ' + (h ? h + 'h ' : '') + m + 'm ' + Math.floor(s % 60) + 's';
}

function render(s) {
  $('node').textContent = s.node;
  $('version').textContent = s.version;
  $('uptime').textContent = uptime(s.uptime_s);
  const r = $('ready');
  r.className = 'badge ' + (s.ready ? 'ok' : 'bad');
  r.textContent = s.ready ? 'ready' : 'not ready: ' + s.not_ready;
  r.dataset.ready = String(s.ready);
  $('connections').textContent = fmt(s.info.connections);
  $('subscriptions').textContent = fmt(s.info.subscriptions);
  push('connections', s.info.connections);
  push('subscriptions', s.info.subscriptions);
  if (last) {
    const dt = Math.max(0.001, (s.time_ms - last.time_ms) / 1000);
    const rin = Math.max(0, (s.counters.messages_in_total - last.counters.messages_in_total) / dt);
    const rout = Math.max(0, (s.counters.messages_out_total - last.counters.messages_out_total) / dt);
    $('rate-in').textContent = fmt(rin);
    $('rate-out').textContent = fmt(rout);
    push('in', rin);
    push('out', rout);
  }
  last = s;
  spark('c-connections', hist.connections);
  spark('c-subscriptions', hist.subscriptions);
  spark('c-in', hist.in);
  spark('c-out', hist.out);
  const tb = $('tenants');
  tb.textContent = '';
  for (const t of s.info.tenants || []) {
    const tr = document.createElement('tr');
    tr.dataset.tenant = t.tenant;
    for (const v of [t.tenant, fmt(t.connections), fmt(t.subscriptions)]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  $('tenantsNote').textContent = s.info.tenants_truncated ? '(the busiest only)' : '';
  const spine = Object.assign({}, s.spine);
  if ('connected' in spine) spine.connected = spine.connected ? 'yes' : 'NO';
  dl('spine', spine);
  const brain = Object.assign({ where: s.brain }, s.brain_state);
  if ('store_up' in brain) brain.store_up = brain.store_up ? 'yes' : 'NO';
  dl('brain', brain);
  dl('limits', Object.assign({
    'slow consumers': s.counters.slow_consumers_total || 0,
    'messages dropped': s.counters.messages_dropped_total || 0,
  }, Object.fromEntries(Object.entries(s.limit_hits).map(([k, v]) => ['limit ' + k, v]))));
  dl('handshake', s.handshake_failures);
}

async function poll() {
  const tok = sessionStorage.getItem('arqAdminToken') || '';
  try {
    const res = await fetch('/admin/api/status', { cache: 'no-store', headers: tok ? { Authorization: 'Bearer ' + tok } : {} });
    if (res.status === 401) {
      $('auth').hidden = false;
      $('authMsg').textContent = tok ? 'wrong token' : 'this node needs its admin token';
      return;
    }
    if (!res.ok) throw new Error('HTTP ' + res.status);
    $('auth').hidden = true;
    $('err').hidden = true;
    render(await res.json());
  } catch (e) {
    $('err').hidden = false;
    $('err').textContent = 'cannot reach the node: ' + e.message;
  }
}

$('auth').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('arqAdminToken', $('token').value);
  poll();
});

poll();
setInterval(poll, 1000);
