// The dlm dashboard: locks, holders, waiters and events, live.
//
// The key lives in this tab's sessionStorage and goes out only in the
// Authorization header and the WebSocket subprotocol "bearer.<key>", never
// in a URL. Every value from the server is written with textContent, never
// as HTML. Rows are created and updated one lock at a time: an event marks
// its lock dirty, and a batch re-reads only the dirty locks.
'use strict';

const $ = (id) => document.getElementById(id);

const store = {
  get: (k) => sessionStorage.getItem('dlm.' + k),
  set: (k, v) => sessionStorage.setItem('dlm.' + k, v),
  del: (k) => sessionStorage.removeItem('dlm.' + k),
  clear() {
    for (const k of Object.keys(sessionStorage)) if (k.startsWith('dlm.')) sessionStorage.removeItem(k);
  },
};

const FEED_MAX = 300;       // events kept in the feed (and in sessionStorage)
const HISTORY_MAX = 200;    // events shown in a lock's history
const DIRTY_MAX = 200;      // more dirty locks than this: reload the list instead
const RESYNC_MS = 30000;    // waiters that time out leave no event: reload now and then
const PAGE = 1000;          // the API's largest list page
const BACKFILL = 50;        // past events shown when a feed starts
const LAST_ID = '9223372036854775807'; // the largest event id
const PAGES_MAX = 20;       // locks shown at most: PAGE * PAGES_MAX per namespace

const S = {
  key: null,
  admin: false,
  tenant: '',          // the admin's pick; '' is the global namespace alone
  locks: new Map(),    // id → entry {id, name, scope, view, sig, row, lefts}
  order: [],           // ids, sorted by name then scope
  prefix: '',
  streams: [],
  dirty: new Set(),
  flushing: false,
  resyncing: null,     // the promise of the list load running, if any
  resyncWanted: false,
  eventSeq: 0,         // events seen, and the count when each lock last had one
  lastEvent: new Map(),
  selected: null,      // id of the lock in the detail pane
  feed: [],            // newest last
  feedSave: 0,
  generation: 0,       // bumped at sign-out and tenant change: late answers are dropped
};

// ---- API ----

class APIError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || 'HTTP ' + status);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, params = {}, method = 'GET') {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') u.searchParams.set(k, v);
  const res = await fetch(u, { method, headers: { Authorization: 'Bearer ' + S.key }, cache: 'no-store' });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new APIError(res.status, body);
  return body;
}

// sources are the namespaces on view: a tenant key sees its own and the
// global one; the admin key the tenant it picked, and the global one.
function sources() {
  if (!S.admin) return [{ scope: 'tenant' }, { scope: 'global' }];
  const out = [];
  if (S.tenant) out.push({ scope: 'tenant', tenant: S.tenant });
  out.push({ scope: 'global' });
  return out;
}

function nsParams(scope) {
  return scope === 'global' ? { scope } : { scope, tenant: S.admin ? S.tenant : undefined };
}

const lockPath = (name) => '/v1/locks/' + encodeURIComponent(name);
const idOf = (scope, name) => scope + '\u0000' + name;

// ---- sign-in ----

async function signIn(key) {
  S.key = key;
  try {
    const t = await api('/v1/tenants');
    S.admin = true;
    fillTenants(t.tenants.map((x) => x.name));
  } catch (e) {
    if (e.status !== 403) {
      S.key = null;
      throw e;
    }
    S.admin = false;
  }
  store.set('key', key);
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  $('who').textContent = S.admin ? 'admin key' : 'tenant key';
  $('tenant-pick').hidden = !S.admin;
  start();
}

function fillTenants(names) {
  const sel = $('tenant');
  sel.replaceChildren();
  for (const n of names) sel.append(new Option(n, n));
  sel.append(new Option('(global only)', ''));
  const saved = store.get('tenant');
  S.tenant = saved !== null && (saved === '' || names.includes(saved)) ? saved : names[0] || '';
  sel.value = S.tenant;
}

function signOut() {
  stop();
  store.clear();
  S.key = null;
  $('app').hidden = true;
  $('signout').hidden = true;
  $('tenant-pick').hidden = true;
  $('who').textContent = '';
  setWatchState('', '');
  $('signin').hidden = false;
  $('key').value = '';
  $('key').focus();
}

function start() {
  S.generation++;
  S.feed = loadFeed();
  renderFeed();
  const gen = S.generation;
  const specs = S.admin
    ? [S.tenant ? { label: 't:' + S.tenant, params: { tenant: S.tenant } } : null, { label: 'global', params: { scope: 'global' } }].filter(Boolean)
    : [{ label: 'key', params: {} }];
  S.streams = specs.map((s) => new Stream(s.label, s.params, gen));
  for (const s of S.streams) s.open();
  resync();
  startStats(gen);
}

function stop() {
  S.generation++;
  for (const s of S.streams) s.close();
  S.streams = [];
  for (const e of S.locks.values()) e.row.remove();
  S.locks.clear();
  S.order = [];
  S.dirty.clear();
  S.lastEvent.clear();
  S.resyncing = null;
  S.resyncWanted = false;
  S.selected = null;
  $('detail').hidden = true;
  $('feed').replaceChildren();
  $('count').textContent = '';
  stopStats();
}

// ---- locks ----

// resync reloads every lock of every namespace on view and updates the rows
// that changed. One load runs at a time; a call during a load asks for one
// more after it, since that load may have read the list before the change
// the caller knows of. The promise ends when a load that started after the
// call has ended.
function resync() {
  S.resyncWanted = true;
  if (S.resyncing) return S.resyncing;
  const gen = S.generation;
  const p = (async () => {
    while (S.resyncWanted && gen === S.generation) {
      S.resyncWanted = false;
      await loadAll(gen).catch((e) => notice('could not load locks: ' + e.message));
    }
  })().finally(() => {
    if (S.resyncing === p) S.resyncing = null;
    updateCount();
  });
  S.resyncing = p;
  return p;
}

// loadAll lists the locks. A lock with an event since the load began is
// left alone: its own read, which the event asked for, is newer than the
// list page.
async function loadAll(gen) {
  const start = S.eventSeq;
  const newer = (id) => (S.lastEvent.get(id) || 0) > start;
  const seen = new Set();
  let truncated = false;
  for (const src of sources()) {
    let cursor = '';
    for (let page = 0; ; page++) {
      if (page === PAGES_MAX) {
        truncated = true;
        break;
      }
      const body = await api('/v1/locks', { ...nsParams(src.scope), limit: PAGE, cursor });
      if (gen !== S.generation) return;
      for (const v of body.locks) {
        const id = idOf(v.scope, v.name);
        seen.add(id);
        if (!newer(id)) upsert(v);
      }
      await yieldToPage(); // let the page paint and answer between pages
      if (!body.next_cursor) break;
      cursor = body.next_cursor;
    }
  }
  for (const id of [...S.locks.keys()]) if (!seen.has(id) && !newer(id)) remove(id);
  for (const [id, seq] of S.lastEvent) if (seq <= start) S.lastEvent.delete(id);
  notice(truncated ? 'showing the first ' + PAGE * PAGES_MAX + ' locks per namespace' : '');
}

setInterval(() => {
  if (S.key) resync();
}, RESYNC_MS);

// Not requestAnimationFrame, which never fires in a background tab.
const yieldToPage = () => new Promise((r) => setTimeout(r, 0));

function markDirty(scope, name) {
  S.dirty.add(idOf(scope, name));
  if (!S.flushing) {
    S.flushing = true;
    setTimeout(flush, 100);
  }
}

// flush re-reads the dirty locks, a few at a time.
async function flush() {
  const gen = S.generation;
  try {
    while (S.dirty.size > 0 && gen === S.generation) {
      if (S.dirty.size > DIRTY_MAX) {
        S.dirty.clear();
        await resync();
        continue;
      }
      const batch = [...S.dirty].slice(0, 8);
      for (const id of batch) S.dirty.delete(id);
      await Promise.all(batch.map(async (id) => {
        const [scope, name] = id.split('\u0000');
        try {
          const v = await api(lockPath(name), nsParams(scope));
          if (gen === S.generation) upsert(v);
        } catch (e) {
          notice('could not read ' + name + ': ' + e.message);
        }
      }));
    }
  } finally {
    // Locks marked after a sign-out or tenant change wait for this flush
    // to end: run them now.
    S.flushing = S.dirty.size > 0;
    if (S.flushing) setTimeout(flush, 100);
    updateCount();
  }
}

function upsert(v) {
  const id = idOf(v.scope, v.name);
  if (v.holders.length === 0 && v.waiters.length === 0) {
    remove(id);
    return;
  }
  const sig = JSON.stringify([v.holders, v.waiters]);
  let e = S.locks.get(id);
  if (e && e.sig === sig) return;
  if (!e) {
    e = { id, name: v.name, scope: v.scope, row: document.createElement('tr') };
    e.row.dataset.name = v.name;
    e.row.dataset.scope = v.scope;
    e.row.addEventListener('click', () => select(id));
    S.locks.set(id, e);
    const i = position(id);
    S.order.splice(i, 0, id);
    const next = S.order[i + 1];
    $('locks').tBodies[0].insertBefore(e.row, next ? S.locks.get(next).row : null);
    e.row.hidden = !v.name.startsWith(S.prefix);
  }
  e.view = v;
  e.sig = sig;
  renderRow(e);
}

function remove(id) {
  const e = S.locks.get(id);
  if (!e) return;
  e.row.remove();
  S.locks.delete(id);
  S.order.splice(position(id), 1);
}

// position is where id is, or goes, in S.order.
function position(id) {
  let lo = 0, hi = S.order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compare(S.order[mid], id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function compare(a, b) {
  const [sa, na] = a.split('\u0000'), [sb, nb] = b.split('\u0000');
  return na < nb ? -1 : na > nb ? 1 : sa < sb ? -1 : sa > sb ? 1 : 0;
}

function el(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}

function renderRow(e) {
  const v = e.view;
  const name = el('td');
  name.append(el('span', 'name', v.name));
  if (v.scope === 'global') name.append(el('span', 'scope', 'global'));
  const mode = v.holders.length ? v.holders[0].mode : v.waiters[0].mode;
  const holders = el('ul');
  e.lefts = [];
  for (const h of v.holders) {
    const li = el('li');
    li.dataset.holder = h.holder_id;
    li.append(el('span', 'holder', h.holder_id), el('span', 'token', '#' + h.fencing_token));
    const left = el('span', 'left');
    left.dataset.expires = Date.parse(h.expires_at);
    li.append(left);
    e.lefts.push(left);
    holders.append(li);
  }
  const queue = el('ol');
  for (const w of v.waiters) {
    const li = el('li', null, w.holder_id + ' (' + w.mode + ')');
    li.dataset.holder = w.holder_id;
    queue.append(li);
  }
  const cells = [name, el('td', null, v.holders.length > 1 ? mode + ' ×' + v.holders.length : mode), el('td'), el('td')];
  cells[2].append(holders);
  cells[3].append(queue);
  e.row.replaceChildren(...cells);
  e.row.classList.toggle('selected', S.selected === e.id);
  tickRow(e, Date.now());
}

// The countdowns: one timer for the page, writing only the text that changed.
function tickRow(e, now) {
  for (const left of e.lefts) {
    const ms = Number(left.dataset.expires) - now;
    const text = ms > 0 ? duration(ms) : 'expired';
    if (left.textContent !== text) {
      left.textContent = text;
      left.classList.toggle('low', ms > 0 && ms < 5000);
      left.classList.toggle('gone', ms <= 0);
      if (ms <= 0) markDirty(e.scope, e.name); // the server will say what replaced it
    }
  }
}

setInterval(() => {
  const now = Date.now();
  for (const e of S.locks.values()) if (!e.row.hidden) tickRow(e, now);
}, 250);

function duration(ms) {
  const s = Math.ceil(ms / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
  return Math.floor(s / 86400) + 'd ' + (Math.floor(s / 3600) % 24) + 'h';
}

function applyFilter() {
  S.prefix = $('prefix').value;
  for (const e of S.locks.values()) e.row.hidden = !e.name.startsWith(S.prefix);
  updateCount();
}

function updateCount() {
  let shown = 0;
  for (const e of S.locks.values()) if (!e.row.hidden) shown++;
  const n = S.locks.size;
  $('count').textContent = shown === n ? n + ' locks' : shown + ' of ' + n + ' locks';
}

function notice(text) {
  $('notice').textContent = text;
}

// ---- one lock: history and force-release ----

async function select(id) {
  if (S.selected) {
    const old = S.locks.get(S.selected);
    if (old) old.row.classList.remove('selected');
  }
  S.selected = id;
  const e = S.locks.get(id);
  if (e) e.row.classList.add('selected');
  const [scope, name] = id.split('\u0000');
  $('detail').hidden = false;
  $('detail').dataset.name = name;
  $('detail-name').textContent = name + (scope === 'global' ? ' (global)' : '');
  $('force').hidden = !S.admin;
  const list = $('history');
  list.replaceChildren(el('li', null, 'loading…'));
  const gen = S.generation;
  // The log is oldest first: page through it and keep the newest.
  let events = [], since = 0;
  try {
    for (let page = 0; page < 10; page++) {
      const body = await api('/v1/events', { name, ...nsParams(scope), since, limit: 1000 });
      if (gen !== S.generation || S.selected !== id) return;
      events = events.concat(body.events).slice(-HISTORY_MAX);
      if (body.events.length < 1000) break;
      since = body.next_since;
    }
  } catch (err) {
    list.replaceChildren(el('li', 'gap', 'could not load the history: ' + err.message));
    return;
  }
  list.replaceChildren();
  if (events.length === 0) list.append(el('li', null, 'no events'));
  for (const ev of events) list.prepend(eventItem(ev));
}

function closeDetail() {
  const e = S.locks.get(S.selected);
  if (e) e.row.classList.remove('selected');
  S.selected = null;
  $('detail').hidden = true;
}

function askForceRelease() {
  const [scope, name] = S.selected.split('\u0000');
  const where = scope === 'global' ? 'the global scope' : 'tenant ' + S.tenant;
  $('confirm-text').textContent = 'Force-release every lease on "' + name + '" in ' + where +
    '? Its holders lose the lock at once, and the next waiters are granted it.';
  $('confirm').dataset.id = S.selected;
  $('confirm').showModal();
}

async function forceRelease() {
  const id = $('confirm').dataset.id;
  $('confirm').close();
  const [scope, name] = id.split('\u0000');
  try {
    const body = await api(lockPath(name) + '/force-release', nsParams(scope), 'POST');
    notice('force-released ' + body.ended.length + ' lease(s) on ' + name);
  } catch (e) {
    notice('force-release failed: ' + e.message);
  }
  markDirty(scope, name);
}

// ---- the watch ----

// A Stream is one watch WebSocket. It remembers the last event id it saw
// (in sessionStorage too, so that a reload resumes) and reconnects with
// since= that id, so the server sends what was missed first.
class Stream {
  constructor(label, params, gen) {
    this.label = label;
    this.params = params;
    this.gen = gen;
    const s = store.get('since.' + label);
    this.since = s === null ? null : Number(s);
    this.backoff = 500;
    this.ws = null;
    this.closed = false;
  }

  async open() {
    if (this.since === null) {
      try {
        await this.catchUp();
      } catch (e) {
        notice('could not read the event log: ' + e.message); // the watch starts from now
      }
      if (this.closed || this.gen !== S.generation) return;
    }
    const u = new URL('/v1/watch', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [k, v] of Object.entries(this.params)) u.searchParams.set(k, v);
    if (this.since !== null) u.searchParams.set('since', this.since);
    const ws = new WebSocket(u, ['dlm.v1', 'bearer.' + S.key]);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      watchStateChanged();
      // Whatever changed while we were away shows in the rows now; the
      // events come as the backlog.
      if (this.reconnected) resync();
      this.reconnected = true;
    };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (this.since !== null && ev.id <= this.since) return;
      this.since = ev.id;
      onEvent(ev);
    };
    ws.onclose = (c) => {
      if (this.closed || this.gen !== S.generation) return;
      this.ws = null;
      watchStateChanged();
      if (c.code === 4001) {
        // since= is older than the log keeps: start from now, and say so.
        this.since = null;
        addToFeed({ gap: 'events were lost: the log was compacted past the last one seen' });
      }
      this.reconnected = true;
      setTimeout(() => {
        if (!this.closed && this.gen === S.generation) this.open();
      }, this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  // catchUp starts a stream that has no position yet at the end of the
  // log, which the history answers as next_since to a since= past it, and
  // shows the last few events before it. From then on the position is
  // saved, so even a reload before the first event misses nothing.
  async catchUp() {
    const end = (await api('/v1/events', { ...this.params, since: LAST_ID, limit: 1 })).next_since;
    const body = await api('/v1/events', { ...this.params, since: Math.max(0, end - 1000), limit: 1000 });
    if (this.closed || this.gen !== S.generation) return;
    for (const ev of body.events.filter((e) => e.id <= end).slice(-BACKFILL)) addToFeed(ev);
    this.since = end;
    saveFeed();
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  }

  live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }
}

function watchStateChanged() {
  const live = S.streams.length > 0 && S.streams.every((s) => s.live());
  setWatchState(live ? 'live' : 'reconnecting…', live ? 'live' : 'down');
}

function setWatchState(text, cls) {
  const p = $('watch-state');
  p.textContent = text;
  p.className = 'pill ' + cls;
}

function onEvent(ev) {
  S.lastEvent.set(idOf(ev.scope, ev.name), ++S.eventSeq);
  markDirty(ev.scope, ev.name);
  addToFeed(ev);
  if (S.selected === idOf(ev.scope, ev.name)) {
    const list = $('history');
    if (list.firstChild && !list.firstChild.dataset.id) list.replaceChildren();
    list.prepend(eventItem(ev));
    while (list.childElementCount > HISTORY_MAX) list.lastChild.remove();
  }
}

// ---- the feed ----

function eventItem(ev) {
  const li = el('li');
  if (ev.gap) {
    li.className = 'gap';
    li.textContent = ev.gap;
    return li;
  }
  li.dataset.id = ev.id;
  li.dataset.type = ev.type;
  li.dataset.name = ev.name;
  const at = new Date(ev.at);
  li.append(el('span', 'at', at.toLocaleTimeString([], { hour12: false }) + '.' + String(at.getMilliseconds()).padStart(3, '0')));
  li.append(el('span', 'type', ev.type));
  let text;
  if (ev.type === 'waiting') {
    text = ev.holder_id + ' waits (' + ev.mode + ') for ' + ev.name + ': the holders should finish up';
  } else {
    text = ev.name + ' · ' + ev.holder_id + ' · ' + ev.mode + (ev.fencing_token ? ' · #' + ev.fencing_token : '');
  }
  if (ev.scope === 'global') text += ' (global)';
  li.append(document.createTextNode(text));
  return li;
}

function addToFeed(ev) {
  S.feed.push(ev);
  if (S.feed.length > FEED_MAX) S.feed.splice(0, S.feed.length - FEED_MAX);
  const list = $('feed');
  list.prepend(eventItem(ev));
  while (list.childElementCount > FEED_MAX) list.lastChild.remove();
  if (!S.feedSave) S.feedSave = setTimeout(saveFeed, 300);
}

// saveFeed keeps the feed and, with it, the last event id of each stream,
// so that after a reload the page shows the same feed and asks for exactly
// the events after it: saved apart, a reload between the two writes would
// leave a gap or a repeat.
function saveFeed() {
  clearTimeout(S.feedSave);
  S.feedSave = 0;
  if (!S.key) return;
  store.set('feed', JSON.stringify(S.feed));
  for (const s of S.streams) {
    if (s.since === null) store.del('since.' + s.label);
    else store.set('since.' + s.label, s.since);
  }
}

function loadFeed() {
  try {
    return JSON.parse(store.get('feed') || '[]');
  } catch {
    return [];
  }
}

function renderFeed() {
  const list = $('feed');
  list.replaceChildren();
  for (const ev of S.feed) list.prepend(eventItem(ev));
}

// ---- request rate and latency, from /metrics ----

const stats = { timer: 0, last: null, rate: [], latency: [] };

// readMetrics sums the API's request counter and latency histogram over its
// /v1 routes (the watch, whose duration is a whole session, left out).
async function readMetrics() {
  const res = await fetch('/metrics', { cache: 'no-store' });
  if (!res.ok) throw new Error('HTTP ' + res.status);
  const text = await res.text();
  let count = 0, sum = 0, n = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('dlm_http_request_duration_seconds_')) continue;
    const m = /^dlm_http_request_duration_seconds_(sum|count)\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const route = /route="([^"]*)"/.exec(m[2]);
    if (!route || !route[1].startsWith('/v1/') || route[1] === '/v1/watch') continue;
    if (m[1] === 'sum') sum += Number(m[3]);
    else count += Number(m[3]);
    n++;
  }
  return { at: performance.now(), count, sum, n };
}

function startStats(gen) {
  stopStats();
  const tick = async () => {
    let cur;
    try {
      cur = await readMetrics();
    } catch {
      // No /metrics on this server, or the connection is down for a
      // moment: hide the figures and look again later.
      $('stats').hidden = true;
      stats.last = null;
      if (gen === S.generation) stats.timer = setTimeout(tick, 5000);
      return;
    }
    if (gen !== S.generation) return;
    $('stats').hidden = false;
    const prev = stats.last;
    stats.last = cur;
    if (prev) {
      const dn = cur.count - prev.count;
      const dt = (cur.at - prev.at) / 1000;
      push(stats.rate, dn / dt);
      push(stats.latency, dn > 0 ? ((cur.sum - prev.sum) / dn) * 1000 : 0);
      $('rate').textContent = (dn / dt).toFixed(1) + ' req/s';
      $('latency').textContent = dn > 0 ? (((cur.sum - prev.sum) / dn) * 1000).toFixed(1) + ' ms mean' : '— ms mean';
      spark($('spark-rate'), stats.rate, '#2f5bd3');
      spark($('spark-latency'), stats.latency, '#b7791f');
    }
    stats.timer = setTimeout(tick, 2000);
  };
  tick();
}

function stopStats() {
  clearTimeout(stats.timer);
  stats.last = null;
  stats.rate = [];
  stats.latency = [];
}

function push(a, v) {
  a.push(v);
  if (a.length > 60) a.shift();
}

function spark(canvas, values, color) {
  const g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  const max = Math.max(...values, 1e-9);
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  const y = (v) => h - 2 - (v / max) * (h - 4);
  g.beginPath();
  if (values.length === 1) {
    g.moveTo(1, y(values[0]));
    g.lineTo(w - 1, y(values[0]));
    g.stroke();
    return;
  }
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (w - 2) + 1;
    if (i === 0) g.moveTo(x, y(v));
    else g.lineTo(x, y(v));
  });
  g.stroke();
}

// ---- wiring ----

$('signin').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('signin-error').textContent = '';
  const key = $('key').value.trim();
  try {
    await signIn(key);
    $('key').value = '';
  } catch (e) {
    $('signin-error').textContent = e.status === 401 ? 'That key is not valid.' : 'Sign-in failed: ' + e.message;
  }
});
$('signout').addEventListener('click', signOut);
window.addEventListener('pagehide', saveFeed);
$('tenant').addEventListener('change', () => {
  stop();
  store.clear();
  store.set('key', S.key);
  S.tenant = $('tenant').value;
  store.set('tenant', S.tenant);
  start();
});
$('prefix').addEventListener('input', applyFilter);
$('detail-close').addEventListener('click', closeDetail);
$('force').addEventListener('click', askForceRelease);
$('confirm-cancel').addEventListener('click', () => $('confirm').close());
$('confirm-ok').addEventListener('click', forceRelease);

if (store.get('key')) {
  signIn(store.get('key')).catch(() => {
    store.clear();
    $('signin').hidden = false;
  });
}
