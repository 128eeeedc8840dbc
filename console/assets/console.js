// probed console: plain JavaScript, no libraries, no build step. Every URL
// is relative, so the page works behind the agent's TLS and basic auth and
// under a path prefix.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';
const HISTORY_WINDOW = 6 * 3600; // seconds shown in the pair chart
const MAX_TIMELINE = 500;

const state = {
  view: null,       // GET api/v1/mesh
  selected: null,   // {src, dst, path, segment}
  pairLoaded: 0,    // Date.now() of the last chart load
  pairKey: '',
  timeline: [],     // newest first
  seen: new Set(),  // keys of events in the timeline
};

// ---- small helpers ---------------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const k of kids.flat()) {
    if (k == null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  setAttrs(e, attrs);
  for (const k of kids.flat()) {
    if (k == null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
}

// api resolves a path against the page without the user:password@ of an
// address typed with credentials: fetch refuses URLs that carry them. The
// browser still sends the basic-auth credentials it has for this origin.
function api(path) {
  const u = new URL(path, document.baseURI);
  u.username = '';
  u.password = '';
  return u.href;
}

async function getJSON(url) {
  const r = await fetch(api(url), {cache: 'no-store', headers: {Accept: 'application/json'}});
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { msg += ': ' + (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(url + ': ' + msg);
  }
  return r.json();
}

function showError(msg) {
  const e = document.getElementById('error');
  if (msg) { e.textContent = msg; e.hidden = false; } else { e.hidden = true; }
}

function fmtRTT(s) {
  if (s == null) return '–';
  const ms = s * 1000;
  if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
  if (ms < 10) return ms.toFixed(2) + ' ms';
  if (ms < 100) return ms.toFixed(1) + ' ms';
  return ms.toFixed(0) + ' ms';
}

function fmtLoss(r) {
  if (r == null) return '–';
  const p = r * 100;
  return (p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
}

function fmtAge(seconds) {
  if (seconds == null || !isFinite(seconds)) return '';
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
        m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + m + 'm';
  if (m) return m + 'm ' + s + 's';
  return s + 's';
}

// Times are shown in UTC, like the logs and Prometheus.
function fmtTime(t) {
  const d = new Date(t);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// Ages are taken against the agent's clock, not the browser's.
function nowAgent() {
  return state.view ? Date.parse(state.view.time) + (Date.now() - state.viewFetched) : Date.now();
}

function ago(t) {
  if (!t) return '';
  return fmtAge((nowAgent() - Date.parse(t)) / 1000) + ' ago';
}

function kindClass(kind) {
  if (kind === 'agent_started') return 'change';
  if (/down|started|failed|violation|remarked|blackhole_started|shift/.test(kind)) return 'bad';
  if (/up$|ended|recovered|restored/.test(kind)) return 'good';
  return 'change';
}

function qs(params) {
  return Object.entries(params).filter(([, v]) => v != null)
    .map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&');
}

// ---- mesh matrix -----------------------------------------------------------

async function refreshMesh() {
  let delay = 2;
  try {
    const v = await getJSON('api/v1/mesh');
    state.view = v;
    state.viewFetched = Date.now();
    delay = v.refresh_seconds || 2;
    document.getElementById('site').textContent = v.self;
    document.getElementById('updated').textContent = 'updated ' + fmtTime(v.time);
    const conn = document.getElementById('conn');
    const unknown = v.agents.filter(a => a.state !== 'ok').length;
    conn.textContent = v.agents.length - unknown + ' of ' + v.agents.length + ' agents answer';
    conn.className = 'badge ' + (unknown ? 'bad' : 'ok');
    showError('');
    renderMatrix(v);
    renderAWS(v);
    renderPairHeader();
    if (Date.now() - state.pairLoaded > 60000) loadPair();
  } catch (e) {
    showError('cannot read the mesh: ' + e.message);
    document.getElementById('conn').className = 'badge bad';
  } finally {
    setTimeout(refreshMesh, delay * 1000);
  }
}

function cellKey(c) {
  return [c.source_site, c.target_site, c.path, c.segment].join('|');
}

function renderMatrix(v) {
  const bySrc = new Map();
  for (const c of v.cells) {
    const k = c.source_site + '|' + c.target_site;
    if (!bySrc.has(k)) bySrc.set(k, []);
    bySrc.get(k).push(c);
  }
  const agents = new Map(v.agents.map(a => [a.site, a]));
  // Rows: the sites of the mesh (agents first if a site is missing from
  // the list, which only happens with a misconfigured peer).
  const sites = [...v.sites];
  for (const a of v.agents) if (!sites.includes(a.site)) sites.push(a.site);
  const head = el('tr', {}, el('th', {}, 'from \\ to'), sites.map(s => el('th', {}, s)));
  const rows = sites.map(src => {
    const a = agents.get(src);
    const badge = !a ? el('span', {class: 'agent-state muted', title: 'no agent address known for this site'}, 'no agent')
      : a.state === 'ok' ? null
      : el('span', {class: 'agent-state unknown', title: a.error || ''}, 'unreachable');
    return el('tr', {'data-src': src},
      el('th', {class: 'src'}, src, badge),
      sites.map(dst => {
        if (src === dst) return el('td', {class: 'diag'}, '—');
        const cells = bySrc.get(src + '|' + dst) || [];
        return el('td', {'data-src': src, 'data-dst': dst}, cells.map(c => entry(c, src === v.self)));
      }));
  });
  const table = el('table', {}, el('thead', {}, head), el('tbody', {}, rows));
  document.getElementById('matrix').replaceChildren(table);
  if (!state.selected) {
    // Open on the pair that most needs a look: down, then degraded, then
    // the lossiest, in matrix order among equals.
    const rank = c => ({down: 0, degraded: 1, up: 2, unknown: 3}[c.state] ?? 3);
    const own = v.cells.filter(c => c.source_site === v.self && c.path);
    own.sort((a, b) => rank(a) - rank(b) || (b.loss_ratio || 0) - (a.loss_ratio || 0));
    if (own.length) select(own[0]);
  }
}

function entry(c, own) {
  const lossy = c.state === 'up' && c.loss_ratio > 0;
  const cls = ['entry', 'state-' + c.state];
  if (lossy) cls.push('lossy');
  if (own && c.path) cls.push('selectable');
  if (state.selected && cellKey(c) === state.pairKey) cls.push('selected');
  const label = c.path ? c.path + '/' + c.segment : 'unknown';
  const title = c.path
    ? `${c.source_site} → ${c.target_site} ${label}: ${c.state}, ${c.targets} target(s), ${c.down} down` +
      (c.segmentation_violation ? ', SEGMENTATION VIOLATION' : '')
    : `${c.source_site}'s agent did not answer: what it sees is unknown`;
  const kids = [el('span', {class: 'label'}, label)];
  if (c.path) {
    kids.push(el('span', {class: 'rtt'}, fmtRTT(c.rtt_median_seconds)), ' · ',
      el('span', {class: 'loss'}, fmtLoss(c.loss_ratio)));
    if (c.state === 'down') kids.push(' · down');
    if (c.segmentation_violation) kids.push(' · ⚠');
  }
  return el('span', {
    class: cls.join(' '), title,
    'data-src': c.source_site, 'data-dst': c.target_site, 'data-path': c.path,
    'data-segment': c.segment, 'data-state': c.state,
    onclick: own && c.path ? () => select(c) : null,
  }, kids);
}

function select(c) {
  state.selected = {src: c.source_site, dst: c.target_site, path: c.path, segment: c.segment};
  state.pairKey = cellKey(c);
  for (const e of document.querySelectorAll('.entry.selected')) e.classList.remove('selected');
  const sel = `.entry[data-src="${CSS.escape(c.source_site)}"][data-dst="${CSS.escape(c.target_site)}"]` +
    `[data-path="${CSS.escape(c.path)}"][data-segment="${CSS.escape(c.segment)}"]`;
  const e = document.querySelector('#matrix ' + sel);
  if (e) e.classList.add('selected');
  renderPairHeader();
  loadPair();
}

// ---- pair: path, chart, events ----------------------------------------------

function selfTargets() {
  const v = state.view, s = state.selected;
  if (!v || !s) return [];
  const self = v.agents.find(a => a.site === v.self);
  if (!self || !self.status) return [];
  return self.status.targets.filter(t => t.source_site === s.src && t.target_site === s.dst &&
    t.path === s.path && t.segment === s.segment && !t.guard);
}

function renderPairHeader() {
  const s = state.selected;
  if (!s) return;
  document.getElementById('pair-title').textContent = `${s.src} → ${s.dst} (${s.path}/${s.segment})`;
  const lines = [];
  for (const t of selfTargets()) {
    const name = t.target + ' ' + t.protocol + (t.port ? '/' + t.port : '');
    const up = t.up == null ? 'no verdict yet' : t.up ? 'up' : 'down';
    lines.push(`${name}: ${up}${t.since ? ' for ' + fmtAge((nowAgent() - Date.parse(t.since)) / 1000) : ''}, ` +
      `median ${fmtRTT(t.rtt_median_seconds)}, loss ${fmtLoss(t.loss_ratio)}, jitter ${fmtRTT(t.jitter_seconds)}`);
    if (t.trace) {
      const tr = t.trace;
      lines.push(`  path: ${tr.hops.join(' → ')} (${tr.hops.length} hops)` +
        (tr.last_change ? `, since ${fmtTime(tr.last_change)} (${ago(tr.last_change)})` : '') +
        `, ${tr.changes} change(s)` +
        (tr.previous ? `; before: ${tr.previous.join(' → ')}` : '') +
        (tr.mtu_bytes ? `; MTU ${tr.mtu_bytes}` : '') + (tr.mtu_blackhole ? ' BLACK HOLE' : ''));
    }
  }
  document.getElementById('pair-path').textContent = lines.join('\n') || 'no targets of this agent on this pair';
}

async function loadPair() {
  const s = state.selected;
  if (!s) return;
  state.pairLoaded = Date.now();
  const key = state.pairKey;
  try {
    const [hist, evs] = await Promise.all([
      getJSON('api/v1/history?' + qs({source_site: s.src, target_site: s.dst, path: s.path, segment: s.segment, since: '6h'})),
      getJSON('api/v1/events?' + qs({source_site: s.src, target_site: s.dst, since: '6h', limit: 200, related: 'false'})),
    ]);
    if (key !== state.pairKey) return; // another pair was selected meanwhile
    renderChart(hist, evs.events);
    renderPairEvents(evs.events);
  } catch (e) {
    showError('cannot load the pair: ' + e.message);
  }
}

function renderPairEvents(evs) {
  const ul = document.getElementById('pair-events');
  ul.replaceChildren(...evs.map(e => eventItem(e)));
  if (!evs.length) ul.append(el('li', {class: 'muted'}, 'no events in the last 6 hours'));
}

function renderChart(hist, evs) {
  const box = document.getElementById('chart');
  if (!hist.enabled) {
    box.replaceChildren(el('p', {class: 'none'}, 'History is turned off on this agent.'));
    return;
  }
  const series = hist.series.filter(s => s.points.length);
  if (!series.length) {
    box.replaceChildren(el('p', {class: 'none'}, 'No history yet for this pair.'));
    return;
  }
  const end = Math.floor(nowAgent() / 1000);
  box.replaceChildren(...series.map(s => chart(s, evs, end - HISTORY_WINDOW, end)));
}

// chart draws one target's minutes smokeping-style: the min–max band, the
// median line, and loss as red bars along the bottom, with the pair's events
// as dashed vertical lines.
function chart(s, evs, t0, t1) {
  const W = 900, H = 230, L = 58, R = 10, T = 22, B = 36, LOSSH = 24;
  const plotH = H - T - B - LOSSH - 4;
  const pts = s.points; // [time, min, median, max, sent, lost]
  const maxes = pts.map(p => p[3]).filter(v => v != null).sort((a, b) => a - b);
  // Scale to the 98th percentile of the maxima so one spike does not
  // flatten the chart; taller values are clipped.
  let ymax = maxes.length ? maxes[Math.min(maxes.length - 1, Math.floor(maxes.length * 0.98))] * 1.15 : 0.001;
  if (!(ymax > 0)) ymax = 0.001;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => T + plotH - Math.min(v, ymax) / ymax * plotH;
  const g = sv('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': 'RTT of ' + s.labels.target, 'data-target': s.labels.target, 'data-protocol': s.labels.protocol});
  const lbl = s.labels;
  g.append(sv('text', {x: L, y: 14, class: 'title'},
    `${lbl.target} ${lbl.protocol}${lbl.port ? '/' + lbl.port : ''} — min/median/max RTT per minute, loss below`));
  // Grid and axes.
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    g.append(sv('line', {x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid'}),
      sv('text', {x: L - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'axis'}, i ? fmtRTT(v) : '0'));
  }
  for (let h = Math.ceil(t0 / 3600) * 3600; h <= t1; h += 3600) {
    const d = new Date(h * 1000);
    g.append(sv('line', {x1: x(h), x2: x(h), y1: T, y2: H - B, class: 'grid'}),
      sv('text', {x: x(h), y: H - B + 14, 'text-anchor': 'middle', class: 'axis'},
        String(d.getUTCHours()).padStart(2, '0') + ':00'));
  }
  g.append(sv('text', {x: W - R, y: H - 4, 'text-anchor': 'end', class: 'axis'}, 'UTC'));
  // Runs of consecutive minutes with answers: the band and the line break
  // at gaps instead of bridging them.
  const runs = [];
  let run = [];
  for (const p of pts) {
    if (p[0] < t0 - 60) continue;
    if (p[2] == null || (run.length && p[0] - run[run.length - 1][0] > 60)) {
      if (run.length) runs.push(run);
      run = [];
    }
    if (p[2] != null) run.push(p);
  }
  if (run.length) runs.push(run);
  for (const r of runs) {
    const half = 30; // each minute is drawn across its own width
    const top = r.map(p => `${x(p[0] + half).toFixed(1)},${y(p[3]).toFixed(1)}`);
    const bottom = r.slice().reverse().map(p => `${x(p[0] + half).toFixed(1)},${y(p[1]).toFixed(1)}`);
    if (r.length === 1) {
      const p = r[0];
      g.append(sv('rect', {class: 'band', x: x(p[0]), y: y(p[3]), width: Math.max(1, x(p[0] + 60) - x(p[0])),
        height: Math.max(1, y(p[1]) - y(p[3]))}));
    } else {
      g.append(sv('path', {class: 'band', d: 'M' + top.join('L') + 'L' + bottom.join('L') + 'Z'}));
    }
    g.append(sv('path', {class: 'median', d: 'M' + r.map(p => `${x(p[0] + half).toFixed(1)},${y(p[2]).toFixed(1)}`).join('L') +
      (r.length === 1 ? `h${Math.max(1, x(r[0][0] + 60) - x(r[0][0])).toFixed(1)}` : '')}));
  }
  // Loss strip.
  const ly = H - B - LOSSH + 16;
  g.append(sv('line', {x1: L, x2: W - R, y1: ly + LOSSH - 16, y2: ly + LOSSH - 16, class: 'grid'}),
    sv('text', {x: L - 4, y: ly + 6, 'text-anchor': 'end', class: 'axis'}, 'loss'));
  for (const p of pts) {
    if (!p[5] || p[0] < t0 - 60) continue;
    const frac = p[5] / p[4];
    const h = Math.max(2, frac * (LOSSH - 4));
    g.append(sv('rect', {class: 'loss', x: x(p[0]), y: ly + LOSSH - 16 - h, width: Math.max(1.5, x(p[0] + 60) - x(p[0])), height: h},
      sv('title', {}, `${fmtTime(p[0] * 1000)}: ${p[5]} of ${p[4]} lost`)));
  }
  // Events of the pair.
  for (const e of evs) {
    const t = Date.parse(e.time) / 1000;
    if (t < t0 || t > t1) continue;
    g.append(sv('g', {class: 'event-mark', 'data-kind': e.kind},
      sv('line', {x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'event'}),
      sv('line', {x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'event-hit'}),
      sv('title', {}, `${fmtTime(e.time)} ${e.kind}: ${e.summary}`)));
  }
  return g;
}

// ---- AWS ---------------------------------------------------------------------

function stateCell(text, ok, since) {
  const cls = ok === true ? 'up' : ok === false ? 'down' : 'unknown';
  return el('td', {class: 'state-cell ' + cls, title: since ? 'since ' + fmtTime(since) : null},
    text, since ? el('span', {class: 'muted'}, ' · ' + ago(since)) : null);
}

function renderAWS(v) {
  const conns = new Map(), vifs = new Map(), sources = [];
  for (const a of v.agents) {
    const aws = a.status && a.status.aws;
    if (!aws) continue;
    for (const c of aws.connections || []) if (!conns.has(c.connection_id)) conns.set(c.connection_id, c);
    for (const x of aws.vifs || []) if (!vifs.has(x.vif_id)) vifs.set(x.vif_id, x);
    for (const s of aws.sources || []) sources.push(Object.assign({agent: a.site}, s));
  }
  const box = document.getElementById('aws');
  if (!conns.size && !vifs.size && !sources.length) {
    box.replaceChildren(el('p', {class: 'muted'}, 'No agent reports AWS state (no aws: section in the mesh file).'));
    return;
  }
  const connRows = [...conns.values()].map(c => el('tr', {'data-connection': c.connection_id},
    el('td', {}, c.connection_id), el('td', {}, c.connection_name), el('td', {}, c.site), el('td', {}, c.location),
    stateCell(c.state, c.up, c.since),
    c.macsec ? stateCell((c.macsec.up ? 'up' : 'down') + ' (' + c.macsec.encryption_mode + ')', c.macsec.up, c.macsec.since)
      : el('td', {class: 'muted'}, 'no MACsec')));
  const vifRows = [];
  for (const x of vifs.values()) {
    const peers = x.bgp_peers || [];
    const n = Math.max(1, peers.length);
    const first = el('tr', {'data-vif': x.vif_id},
      el('td', {rowspan: n}, x.vif_id), el('td', {rowspan: n}, x.vif_name), el('td', {rowspan: n}, x.site + '/' + (x.segment || '–')),
      stateCell(x.state + (x.poll_failed ? ' (stale: polling fails)' : ''), x.up, x.since));
    const peerCells = p => [el('td', {}, p.address_family + ' ' + p.peer_address),
      stateCell(p.status, p.status === 'unknown' ? null : p.up, p.since)];
    if (peers.length) first.append(...peerCells(peers[0]));
    else first.append(el('td', {colspan: 2, class: 'muted'}, 'no BGP peers'));
    vifRows.push(first);
    for (const p of peers.slice(1)) vifRows.push(el('tr', {'data-vif': x.vif_id, 'data-peer': p.bgp_peer_id}, peerCells(p)));
    if (peers.length) first.setAttribute('data-peer', peers[0].bgp_peer_id);
  }
  const srcRows = sources.map(s => el('tr', {}, el('td', {}, s.agent), el('td', {}, s.source),
    stateCell(s.up ? 'polling' : 'failing', s.up, null),
    el('td', {}, s.last_success ? fmtTime(s.last_success) + ' (' + ago(s.last_success) + ')' : 'never')));
  box.replaceChildren(
    el('h3', {}, 'Connections'),
    el('table', {class: 'aws', id: 'aws-connections'},
      el('thead', {}, el('tr', {}, ['connection', 'name', 'site', 'location', 'state', 'MACsec'].map(h => el('th', {}, h)))),
      el('tbody', {}, connRows)),
    el('h3', {}, 'Virtual interfaces and BGP'),
    el('table', {class: 'aws', id: 'aws-vifs'},
      el('thead', {}, el('tr', {}, ['VIF', 'name', 'site/segment', 'state', 'BGP peer', 'BGP'].map(h => el('th', {}, h)))),
      el('tbody', {}, vifRows)),
    sources.length ? el('h3', {}, 'Polling') : null,
    sources.length ? el('table', {class: 'aws', id: 'aws-sources'},
      el('thead', {}, el('tr', {}, ['agent', 'service', 'state', 'last success'].map(h => el('th', {}, h)))),
      el('tbody', {}, srcRows)) : null);
}

// ---- timeline ----------------------------------------------------------------

function eventKey(e) {
  return e.time + '|' + e.kind + '|' + e.summary;
}

function eventItem(e, fresh) {
  const rel = e.related && e.related.length
    ? el('details', {}, el('summary', {}, e.related.length + ' event(s) nearby'),
        el('ul', {}, e.related.map(r => el('li', {}, el('time', {datetime: r.time}, fmtTime(r.time)),
          el('span', {class: 'kind ' + kindClass(r.kind)}, r.kind), r.summary))))
    : null;
  return el('li', {class: 'event' + (fresh ? ' new' : ''), 'data-kind': e.kind},
    el('time', {datetime: e.time}, fmtTime(e.time)),
    el('span', {class: 'kind ' + kindClass(e.kind)}, e.kind),
    el('span', {class: 'summary'}, e.summary), rel);
}

function addEvents(evs, fresh) {
  let added = false;
  for (const e of evs) {
    const k = eventKey(e);
    if (state.seen.has(k)) continue;
    state.seen.add(k);
    state.timeline.push(Object.assign({fresh}, e));
    added = true;
  }
  if (!added) return;
  state.timeline.sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
  for (const e of state.timeline.splice(MAX_TIMELINE)) state.seen.delete(eventKey(e));
  document.getElementById('timeline').replaceChildren(...state.timeline.map(e => eventItem(e, e.fresh)));
  for (const e of state.timeline) e.fresh = false;
}

function startTimeline() {
  const badge = document.getElementById('stream');
  const pending = [];
  let loaded = false;
  // The stream is opened first and the past read after, so nothing falls
  // between the two; duplicates are dropped by key.
  const es = new EventSource(api('api/v1/events/stream'));
  es.onopen = () => { badge.textContent = 'live'; badge.className = 'badge ok'; };
  es.onerror = () => { badge.textContent = 'reconnecting…'; badge.className = 'badge bad'; };
  es.onmessage = msg => {
    let e;
    try { e = JSON.parse(msg.data); } catch (_) { return; }
    if (!loaded) { pending.push(e); return; }
    addEvents([e], true);
    const s = state.selected;
    if (s && e.labels.source_site === s.src && e.labels.target_site === s.dst) loadPair();
  };
  getJSON('api/v1/events?limit=200').then(r => {
    loaded = true;
    addEvents(r.events.concat(pending), false);
    if (!r.events.length && !pending.length) {
      document.getElementById('timeline').replaceChildren(el('li', {class: 'muted'}, 'no events yet'));
    }
  }).catch(e => showError('cannot read the events: ' + e.message));
}

document.addEventListener('DOMContentLoaded', () => {
  refreshMesh();
  startTimeline();
});
