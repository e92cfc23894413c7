// The dashboard page: one HTML file with its styles and script inline, no
// framework and nothing fetched from elsewhere, so it works offline and under
// a strict Content-Security-Policy. It follows /dashboard/api/events (server-sent
// events) and reconnects on its own; grain search and the state editor use the
// JSON API. Every value is put in the page as text, never as HTML.

const style = `
:root{--bg:#f5f6f8;--card:#fff;--ink:#1d2330;--muted:#6b7383;--line:#e3e6eb;--accent:#2f6fde;--ok:#1f9d55;--warn:#d98b00;--bad:#d4393b;--dead:#8a8f99}
*{box-sizing:border-box}body{margin:0;font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{display:flex;align-items:center;gap:16px;padding:10px 20px;background:#1d2330;color:#fff}
header h1{font-size:16px;margin:0;font-weight:600}header .sub{color:#aab2c0;font-size:12px}
#conn{margin-left:auto;font-size:12px;display:flex;align-items:center;gap:6px}#conn i{width:9px;height:9px;border-radius:50%;background:var(--dead);display:inline-block}
#conn.live i{background:#3ddc84}#conn.down i{background:var(--bad)}
main{padding:16px 20px;display:grid;grid-template-columns:repeat(12,1fr);gap:14px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
section h2{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 8px;font-weight:600}
.s12{grid-column:span 12}.s8{grid-column:span 8}.s7{grid-column:span 7}.s6{grid-column:span 6}.s5{grid-column:span 5}.s4{grid-column:span 4}
@media (max-width:1100px){.s8,.s7,.s6,.s5,.s4{grid-column:span 12}}
#totals{display:flex;gap:12px;flex-wrap:wrap;align-items:stretch}
.card{flex:1 1 140px;border:1px solid var(--line);border-radius:6px;padding:8px 12px}.card b{display:block;font-size:22px;font-weight:600}.card span{color:var(--muted);font-size:12px}
.spark{flex:3 1 320px}.spark svg{width:100%;height:48px;display:block}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:500;font-size:12px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-height:300px;overflow:auto}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:11px;font-weight:600;color:#fff}
.b-active{background:var(--ok)}.b-joining,.b-stopping{background:var(--accent)}.b-unreachable{background:var(--warn)}.b-dead{background:var(--dead)}.b-suspected{background:var(--bad)}
tr.dead td{color:var(--dead)}
.bar{height:8px;background:var(--accent);border-radius:4px;min-width:1px}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
ul.warnings{list-style:none;margin:0;padding:0}ul.warnings li{border-left:4px solid var(--warn);background:#fff8ea;padding:6px 10px;margin-bottom:6px;border-radius:4px}
ul.warnings li b{font-weight:600}
form{display:flex;gap:8px;flex-wrap:wrap;align-items:center}input,select,button,textarea{font:inherit}
input,select{padding:4px 8px;border:1px solid var(--line);border-radius:4px}
button{padding:4px 12px;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:4px;cursor:pointer}button:disabled{opacity:.5;cursor:default}
a.grain{color:var(--accent);cursor:pointer;text-decoration:none}
#grain-result{margin-top:10px}
.state{border:1px solid var(--line);border-radius:6px;padding:8px;margin-top:8px}
textarea{width:100%;min-height:110px;font-family:ui-monospace,Menlo,monospace;font-size:12px;border:1px solid var(--line);border-radius:4px;padding:6px}
.msg-ok{color:var(--ok)}.msg-bad{color:var(--bad)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}dt{color:var(--muted)}dd{margin:0}
`;

const script = `
'use strict';
const base = location.pathname.replace(/\\/+$/, '');
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat()) if (c !== undefined && c !== null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}
const fmt = (n, d = 1) => n === null || n === undefined ? '–' : n >= 1000 ? Math.round(n).toLocaleString('en') : n.toFixed(d);
const ms = (n) => n === null || n === undefined ? '–' : n < 1 ? (n * 1000).toFixed(0) + ' µs' : n < 1000 ? n.toFixed(n < 10 ? 2 : 0) + ' ms' : (n / 1000).toFixed(1) + ' s';
const when = (t) => t ? new Date(t).toLocaleTimeString() : '–';
const ago = (t, now) => { if (!t) return '–'; const s = Math.max(0, Math.round((now - t) / 1000)); return s < 120 ? s + ' s ago' : s < 7200 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago'; };
function table(id, head, rows, empty) {
  const t = $(id);
  t.replaceChildren(el('tr', {}, head.map(([h, n]) => el('th', { class: n ? 'n' : '' }, h))), ...rows);
  if (rows.length === 0) t.append(el('tr', {}, el('td', { class: 'empty', colspan: head.length }, empty)));
}
let knownTypes = [];
function render(m) {
  $('served').textContent = 'served by ' + m.servedBy + ' · updated ' + when(m.at) + (m.windowSeconds > 0 ? ' · rates over the last ' + m.windowSeconds.toFixed(0) + ' s' : '');
  const t = m.totals;
  $('t-silos').textContent = t.active + ' / ' + t.silos;
  $('t-calls').textContent = fmt(t.callsPerSecond);
  $('t-fail').textContent = fmt(t.failuresPerSecond, 2);
  $('t-acts').textContent = t.activations.toLocaleString('en');
  spark(m.history);
  table('silos', [['silo'], ['status'], ['calls/s', 1], ['failed/s', 1], ['p50', 1], ['p99', 1], ['activations', 1], ['queued', 1], ['pending', 1], ['started'], ['note']],
    m.silos.map((s) => el('tr', { 'data-silo': s.address, 'data-status': s.status, class: s.status === 'dead' ? 'dead' : '' },
      el('td', { class: 'mono' }, s.address, s.hostName ? el('span', { class: 'muted' }, ' ' + s.hostName) : ''),
      el('td', {}, el('span', { class: 'badge b-' + s.status }, s.status), s.suspectedBy.length ? el('span', { class: 'badge b-suspected', title: 'voted dead by ' + s.suspectedBy.join(', ') }, 'suspected') : ''),
      el('td', { class: 'n' }, fmt(s.callsPerSecond)), el('td', { class: 'n' }, fmt(s.failuresPerSecond, 2)),
      el('td', { class: 'n' }, ms(s.p50Ms)), el('td', { class: 'n' }, ms(s.p99Ms)),
      el('td', { class: 'n' }, s.activations ?? '–'), el('td', { class: 'n' }, s.queued ?? '–'), el('td', { class: 'n' }, s.pending ?? '–'),
      el('td', {}, ago(s.startedAt, m.at)),
      el('td', { class: 'muted' }, s.status === 'dead' ? 'last alive ' + ago(s.iAmAliveAt, m.at) : s.error ? s.error : s.suspectedBy.length ? 'suspected by ' + s.suspectedBy.join(', ') : s.counting ? '' : 'counts no calls (metrics off)'))),
    'no silos');
  const maxRate = Math.max(1, ...m.types.map((x) => x.callsPerSecond || 0));
  table('types', [['grain type'], ['calls/s', 1], [''], ['failed/s', 1], ['p50', 1], ['p99', 1], ['activations', 1], ['calls', 1]],
    m.types.map((x) => el('tr', { 'data-type': x.type, 'data-calls-per-second': x.callsPerSecond ?? '' },
      el('td', { class: 'mono' }, x.type), el('td', { class: 'n' }, fmt(x.callsPerSecond)),
      el('td', { style: 'width:120px' }, el('div', { class: 'bar', style: 'width:' + (100 * (x.callsPerSecond || 0) / maxRate).toFixed(1) + '%', title: Object.entries(x.perSilo).map(([a, r]) => a + ': ' + fmt(r)).join('\\n') })),
      el('td', { class: 'n' }, fmt(x.failuresPerSecond, 2)), el('td', { class: 'n' }, ms(x.p50Ms)), el('td', { class: 'n' }, ms(x.p99Ms)),
      el('td', { class: 'n' }, x.activations), el('td', { class: 'n' }, x.calls.toLocaleString('en')))),
    'no grain calls yet');
  knownTypes = m.types.map((x) => x.type);
  const dl = $('type-list'); dl.replaceChildren(...knownTypes.map((x) => el('option', { value: x })));
  table('hot', [['grain'], ['silo'], ['calls/s', 1]],
    m.hot.map((h) => el('tr', { 'data-grain': h.grain },
      el('td', { class: 'mono' }, el('a', { class: 'grain', onclick: () => search(h.type, h.grain.slice(h.type.length + 1)) }, h.grain)),
      el('td', { class: 'mono muted' }, h.silo),
      el('td', { class: 'n', title: 'overstated by ' + fmt(h.error) + ' at most' }, fmt(h.callsPerSecond)))),
    'no sampled calls (the dashboard samples 1 call in 16)');
  const w = $('warnings');
  w.replaceChildren(...m.warnings.map((x) => el('li', { 'data-grain': x.grain, 'data-pattern': x.pattern },
    el('b', {}, x.pattern), ': ', el('a', { class: 'grain mono', onclick: () => { const i = x.grain.indexOf('/'); search(x.grain.slice(0, i), x.grain.slice(i + 1)); } }, x.grain),
    ' on ', el('span', { class: 'mono' }, x.silo), ' — ',
    x.kind === 'calls' ? fmt(x.value) + ' calls/s (threshold ' + x.threshold + ')' : x.value + ' calls waiting (threshold ' + x.threshold + ')',
    el('div', {}, x.advice))));
  if (m.warnings.length === 0) w.append(el('li', { class: 'empty', style: 'border-color:var(--ok);background:#effaf3' }, 'No hot grains: none above ' + m.thresholds.callsPerSecond + ' calls/s or ' + m.thresholds.queueLength + ' calls waiting.'));
  table('errors', [['grain type'], ['code'], ['per s', 1], ['total', 1]],
    m.errors.map((e) => el('tr', {}, el('td', { class: 'mono' }, e.type), el('td', { class: 'mono' }, e.code), el('td', { class: 'n' }, fmt(e.perSecond, 2)), el('td', { class: 'n' }, e.total.toLocaleString('en')))),
    'no failed calls');
  const maxActs = Math.max(1, ...m.types.map((x) => x.activations));
  table('activations', [['grain type'], ['activations', 1], ['']],
    m.types.filter((x) => x.activations > 0).sort((a, b) => b.activations - a.activations).map((x) => el('tr', {},
      el('td', { class: 'mono' }, x.type), el('td', { class: 'n' }, x.activations.toLocaleString('en')),
      el('td', { style: 'width:45%' }, el('div', { class: 'bar', style: 'width:' + (100 * x.activations / maxActs).toFixed(1) + '%' })))),
    'no activations');
  table('events', [['time'], ['silo'], ['event'], ['detail']],
    m.events.map((e) => el('tr', {}, el('td', {}, when(e.at)), el('td', { class: 'mono' }, e.silo), el('td', {}, e.what), el('td', { class: 'muted' }, e.detail))),
    'no membership events yet');
}
function spark(values) {
  const svg = $('spark');
  const W = 300, H = 48, n = values.length;
  if (n < 2) { svg.innerHTML = ''; return; }
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * W / (n - 1)).toFixed(1) + ',' + (H - 2 - (v / max) * (H - 6)).toFixed(1)).join(' ');
  svg.innerHTML = '<polyline fill="none" stroke="#2f6fde" stroke-width="1.5" points="' + pts + '"/>';
}
async function api(path, init) {
  const r = await fetch(base + path, init);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw { message: body.error || r.statusText, status: r.status };
  return body;
}
async function search(type, key) {
  $('q-type').value = type; $('q-key').value = key;
  const out = $('grain-result');
  out.replaceChildren(el('span', { class: 'muted' }, 'looking up ' + type + '/' + key + ' …'));
  let g;
  try { g = await api('/api/grain?type=' + encodeURIComponent(type) + '&key=' + encodeURIComponent(key)); }
  catch (e) { out.replaceChildren(el('span', { class: 'msg-bad' }, e.message)); return; }
  const loc = g.location;
  const local = g.local;
  out.replaceChildren(el('div', { 'data-grain': g.grain, 'data-silo': loc ? loc[0] : '', 'data-active': loc ? 'true' : 'false' },
    el('dl', {},
      el('dt', {}, 'grain'), el('dd', { class: 'mono' }, g.grain, g.known ? '' : el('span', { class: 'muted' }, ' (a type the serving silo does not host)')),
      el('dt', {}, 'lives on'), el('dd', { class: 'mono', id: 'grain-silo' }, loc ? loc[0] + ' (activation ' + loc[1] + ')' : 'not active anywhere'),
      el('dt', {}, 'activation'), el('dd', {}, local ? local.state + ', ' + local.queued + ' waiting, ' + local.running + ' running' : '–'),
      el('dt', {}, 'recent calls'), el('dd', { id: 'grain-rate' }, local && local.rate !== null ? fmt(local.rate) + ' calls/s' : 'not among the hot grains'),
      el('dt', {}, 'reminders'), el('dd', {}, g.remindersError ? el('span', { class: 'msg-bad' }, g.remindersError) : g.reminders.length === 0 ? 'none' :
        el('table', {}, el('tr', {}, el('th', {}, 'name'), el('th', {}, 'first tick'), el('th', { class: 'n' }, 'period'), el('th', {}, 'last tick')),
          g.reminders.map((r) => el('tr', {}, el('td', { class: 'mono' }, r.name), el('td', {}, new Date(r.startAt).toLocaleString()), el('td', { class: 'n' }, ms(r.periodMs)), el('td', {}, r.lastTickAt ? new Date(r.lastTickAt).toLocaleString() : '–')))))),
    g.states.length === 0 ? el('p', { class: 'muted' }, 'No persistent state known for this type (states are known once one of its grains has activated).') :
      g.states.map((s) => stateEditor(type, key, s))));
}
function stateEditor(type, key, s) {
  const area = el('textarea', { 'data-state': s.state, readonly: !s.editable }, s.json === null ? '' : s.json);
  const msg = el('div', { class: 'state-message', 'data-state': s.state });
  let etag = s.etag;
  const tag = el('span', { class: 'mono', 'data-etag': s.state }, etag === null ? 'none (no record)' : etag);
  const save = el('button', { 'data-save': s.state, disabled: !s.editable, onclick: async () => {
    save.disabled = true; msg.className = 'state-message'; msg.textContent = 'writing …';
    try {
      const r = await api('/api/state', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type, key, state: s.state, etag, json: area.value }) });
      etag = r.etag; tag.textContent = etag;
      msg.className = 'state-message msg-ok';
      msg.textContent = 'written (ETag ' + r.etag + ')' + (r.deactivated ? '; the activation was deactivated, its next call reads the new state' : '');
    } catch (e) {
      msg.className = 'state-message msg-bad';
      msg.textContent = (e.status === 409 ? 'refused, the record changed since it was read: ' : '') + e.message;
    } finally { save.disabled = !s.editable; }
  } }, 'save');
  return el('div', { class: 'state' },
    el('div', {}, el('b', {}, s.state), el('span', { class: 'muted' }, ' in storage ' + s.provider + ' · ETag '), tag),
    s.error ? el('div', { class: 'msg-bad' }, s.error) : area,
    s.editable ? '' : el('div', { class: 'muted' }, s.error ? '' : 'Read-only here: the value holds what JSON cannot (shown tagged).'),
    el('div', { style: 'margin-top:6px;display:flex;gap:10px;align-items:center' }, save, msg));
}
$('search').addEventListener('submit', (e) => { e.preventDefault(); void search($('q-type').value.trim(), $('q-key').value); });
let source;
function connect() {
  source = new EventSource(base + '/api/events');
  source.addEventListener('snapshot', (e) => { $('conn').className = 'live'; $('conn-text').textContent = 'live'; render(JSON.parse(e.data)); });
  source.addEventListener('failure', (e) => { $('conn').className = 'down'; $('conn-text').textContent = JSON.parse(e.data).error; });
  source.onerror = () => { $('conn').className = 'down'; $('conn-text').textContent = 'reconnecting …'; };
}
connect();
`;

/** The page, titled with `title` (e.g. the cluster id). */
export function dashboardPage(title: string): string {
  const esc = title.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Granary · ${esc}</title><style>${style}</style></head>
<body>
<header><h1>Granary</h1><span class="sub">${esc}</span><span class="sub" id="served"></span>
<span id="conn"><i></i><span id="conn-text">connecting …</span></span></header>
<main>
<section class="s12"><div id="totals">
<div class="card"><b id="t-silos">–</b><span>active silos</span></div>
<div class="card"><b id="t-calls">–</b><span>calls/s</span></div>
<div class="card"><b id="t-fail">–</b><span>failed calls/s</span></div>
<div class="card"><b id="t-acts">–</b><span>activations</span></div>
<div class="card spark"><svg id="spark" viewBox="0 0 300 48" preserveAspectRatio="none"></svg><span>calls/s, last minute</span></div>
</div></section>
<section class="s12"><h2>Silos</h2><div class="scroll"><table id="silos"></table></div></section>
<section class="s7"><h2>Grain types</h2><div class="scroll"><table id="types"></table></div></section>
<section class="s5"><h2>Hot-grain warnings</h2><ul class="warnings" id="warnings"></ul></section>
<section class="s5"><h2>Hottest grains</h2><div class="scroll"><table id="hot"></table></div></section>
<section class="s7"><h2>Grain search</h2>
<form id="search"><input id="q-type" list="type-list" placeholder="grain type" required><datalist id="type-list"></datalist>
<input id="q-key" placeholder="key"><button type="submit">find</button></form><div id="grain-result"></div></section>
<section class="s4"><h2>Errors</h2><div class="scroll"><table id="errors"></table></div></section>
<section class="s4"><h2>Activations by type</h2><div class="scroll"><table id="activations"></table></div></section>
<section class="s4"><h2>Membership events</h2><div class="scroll"><table id="events"></table></div></section>
</main>
<script>${script}</script>
</body></html>
`;
}
