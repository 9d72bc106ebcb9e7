// The relay's status page. Plain JavaScript, no library, nothing from any
// other host. Every value from the relay is set with textContent, never as
// HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_EVENTS = 300;
  let csrf = '';
  let es = null;
  let paused = false;
  let held = []; // events that arrived while paused, newest last
  let clockSkew = 0; // browser time minus relay time, ms
  let vmPlans = [];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function notice(msg) {
    $('notice').textContent = msg;
  }

  function dur(ms) {
    if (!isFinite(ms)) return '';
    const neg = ms < 0;
    let s = Math.round(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const out = h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
    return neg ? `-${out}` : out;
  }

  function relNow() { return Date.now() - clockSkew; }

  function ago(t) {
    if (!t) return '';
    const d = relNow() - Date.parse(t);
    return d < 0 ? 'now' : `${dur(d)} ago`;
  }

  function hhmmss(t) {
    const d = new Date(t);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour12: false });
  }

  // ---- session -------------------------------------------------------

  async function post(path, body) {
    const r = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: body === undefined ? '' : JSON.stringify(body),
    });
    let j = {};
    try { j = await r.json(); } catch (_) { /* not JSON */ }
    return { ok: r.ok, status: r.status, body: j };
  }

  function showSignin(msg) {
    if (es) { es.close(); es = null; }
    csrf = '';
    $('app').hidden = true;
    $('signout').hidden = true;
    $('health').hidden = true;
    $('role').hidden = true;
    $('conn').textContent = '';
    $('signin-section').hidden = false;
    $('signin-error').textContent = msg || '';
    clearData();
    $('token').focus();
  }

  function showApp() {
    $('signin-section').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    connect();
  }

  function clearData() {
    for (const id of ['vms', 'dlq', 'sinks', 'watches', 'poller']) {
      $(id).querySelector('tbody').replaceChildren();
    }
    $('events').replaceChildren();
    held = [];
  }

  async function init() {
    try {
      const r = await fetch('/ui/session', { credentials: 'same-origin', cache: 'no-store' });
      const s = await r.json();
      if (s.signedIn) {
        csrf = s.csrf;
        showApp();
      } else {
        showSignin();
      }
    } catch (e) {
      showSignin('cannot reach the relay: ' + e);
    }
  }

  $('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('token');
    const r = await post('/ui/signin', { token: t.value }).catch((e) => ({ ok: false, body: { error: String(e) } }));
    if (!r.ok) {
      $('signin-error').textContent = r.body.error || 'sign-in failed';
      t.select();
      return;
    }
    t.value = '';
    csrf = r.body.csrf;
    $('signin-error').textContent = '';
    showApp();
    $('main').focus();
  });

  $('signout').addEventListener('click', async () => {
    await post('/ui/signout').catch(() => {});
    showSignin('Signed out.');
  });

  // ---- live feed -----------------------------------------------------

  function connect() {
    if (es) es.close();
    $('conn').textContent = 'connecting…';
    es = new EventSource('/ui/events');
    es.onopen = () => { $('conn').textContent = 'live'; };
    es.onerror = async () => {
      if (!es) return;
      $('conn').textContent = 'reconnecting…';
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. the session ended, or too many pages): ask why.
        es = null;
        try {
          const s = await (await fetch('/ui/session', { credentials: 'same-origin', cache: 'no-store' })).json();
          if (!s.signedIn) { showSignin('The session ended; sign in again.'); return; }
        } catch (_) { /* the relay is away; try again */ }
        setTimeout(() => { if (!es && csrf) connect(); }, 3000);
      }
    };
    es.addEventListener('snapshot', (m) => render(JSON.parse(m.data)));
    es.addEventListener('ev', (m) => addEvent(JSON.parse(m.data)));
    es.addEventListener('signedout', () => showSignin('The session ended; sign in again.'));
  }

  // ---- rendering -----------------------------------------------------

  // syncRows keeps one row per item, keyed, updating cells in place so a
  // focused button keeps its focus across snapshots.
  function syncRows(table, items, key, cells, action) {
    const tbody = $(table).querySelector('tbody');
    const labels = [...$(table).querySelectorAll('thead th')].map((th) => th.textContent);
    const byKey = new Map();
    for (const tr of tbody.children) if (tr.dataset.key !== undefined) byKey.set(tr.dataset.key, tr);
    let empty = tbody.querySelector('tr.empty');
    if (items.length === 0 && !empty) {
      empty = el('tr', 'empty');
      const td = el('td', '', 'none');
      td.colSpan = labels.length;
      empty.appendChild(td);
      tbody.appendChild(empty);
    } else if (items.length > 0 && empty) {
      empty.remove();
    }
    const keep = new Set();
    items.forEach((it, i) => {
      const k = String(key(it));
      keep.add(k);
      let tr = byKey.get(k);
      const vals = cells(it);
      if (!tr) {
        tr = el('tr');
        tr.dataset.key = k;
        vals.forEach((v, j) => { const td = el('td'); td.dataset.label = labels[j] || ''; tr.appendChild(td); });
        if (action) {
          const td = el('td', 'action');
          const b = el('button', 'small secondary', action.label);
          b.type = 'button';
          b.dataset.id = k;
          b.setAttribute('aria-label', `${action.label} ${k}`);
          b.addEventListener('click', () => action.run(k, b));
          td.appendChild(b);
          tr.appendChild(td);
        }
      }
      vals.forEach((v, j) => {
        const td = tr.children[j];
        const [text, cls] = Array.isArray(v) ? v : [v, ''];
        const s = text === undefined || text === null ? '' : String(text);
        if (td.textContent !== s) td.textContent = s;
        if (td.className !== (cls || '')) td.className = cls || '';
      });
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [k, tr] of byKey) if (!keep.has(k)) tr.remove();
  }

  async function act(action, id, button, what) {
    button.disabled = true;
    const r = await post(`/ui/actions/${action}/${encodeURIComponent(id)}`).catch((e) => ({ ok: false, body: { error: String(e) } }));
    button.disabled = false;
    if (r.status === 401) { showSignin('The session ended; sign in again.'); return; }
    if (!r.ok) { notice(`${what} ${id}: ${r.body.error || r.status}`); return; }
    let extra = '';
    if (r.body.outcome) extra = `: ${r.body.outcome}${r.body.error ? ' (' + r.body.error + ')' : ''}`;
    notice(`${what} ${id}${extra}`);
  }

  function render(s) {
    clockSkew = Date.now() - Date.parse(s.now);
    const st = s.status || {};
    const h = $('health');
    h.hidden = false;
    h.textContent = st.status || '?';
    h.className = 'badge ' + (st.status || '');
    h.title = [].concat(st.notReady || [], st.degraded || []).join('\n');
    renderFleet(st.cluster);
    renderRates(s.rates);
    renderVMs(st.autostop);
    renderDLQ(s.dlq);
    renderSinks(st.sinks);
    renderWatches(s.watches);
    renderPoller(st.poller);
  }

  function renderFleet(c) {
    const role = $('role');
    if (!c || typeof c !== 'object') {
      role.hidden = true;
      $('fleet-section').hidden = true;
      return;
    }
    role.hidden = false;
    role.textContent = c.role || 'member';
    $('fleet-section').hidden = false;
    const parts = [];
    if (c.member) parts.push(`this relay: ${c.member}`);
    if (c.role) parts.push(`role: ${c.role}`);
    if (c.leader) parts.push(`leader: ${c.leader}`);
    if (Array.isArray(c.members)) {
      parts.push('members: ' + c.members.map((m) => (typeof m === 'string' ? m : `${m.member || m.id || '?'} (${m.role || '?'})`)).join(', '));
    }
    $('fleet').textContent = parts.join(' · ');
  }

  function chart(svgId, values) {
    const svg = $(svgId);
    const max = Math.max(1, ...values);
    const n = values.length;
    const pts = values.map((v, i) => `${n <= 1 ? 240 : (i * 240) / (n - 1)},${46 - (v / max) * 44}`).join(' ');
    let pl = svg.querySelector('polyline');
    if (!pl) {
      pl = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
      svg.appendChild(pl);
    }
    pl.setAttribute('points', pts);
    svg.setAttribute('aria-label', `${svg.getAttribute('aria-label').split(':')[0]}: peak ${max.toFixed(1)}/s`);
  }

  function renderRates(r) {
    if (!r) return;
    const ing = r.ingest || [], del = r.delivery || [];
    chart('chart-ingest', ing);
    chart('chart-delivery', del);
    $('ingest-now').textContent = ing.length ? ing[ing.length - 1].toFixed(1) : '–';
    $('delivery-now').textContent = del.length ? del[del.length - 1].toFixed(1) : '–';
    $('rates-span').textContent = ing.length ? `last ${dur(ing.length * r.everySeconds * 1000)}, every ${r.everySeconds}s` : 'collecting…';
  }

  const stateText = {
    counting: 'idle clock running', warned: 'warned (vm.idle sent)', 'waiting-for-poll': 'stop due, waiting for a fresh poll',
    unseen: 'not visible: polls failing or not read yet', excluded: 'excluded image', stopped: 'stopped', off: 'auto-stop off',
  };

  function renderVMs(a) {
    a = a || { vms: [] };
    vmPlans = a.vms || [];
    let info = a.enabled ? `Auto-stop on: idle after ${a.idleAfter}, warned ${a.warnBefore} before${a.dryRun ? ' (dry run: stops nothing)' : ''}.` : 'Auto-stop is off (sinks.autostop.enabled).';
    if (a.error) info += ' ' + a.error;
    $('autostop-info').textContent = info;
    $('vms-count').textContent = `(${vmPlans.length})`;
    tickVMs();
  }

  function tickVMs() {
    const now = relNow();
    syncRows('vms', vmPlans, (v) => v.id, (v) => [
      v.id,
      v.imageId || '',
      v.idleSince ? dur(now - Date.parse(v.idleSince)) : '',
      v.stopAt ? [Date.parse(v.stopAt) > now ? dur(Date.parse(v.stopAt) - now) : 'due', Date.parse(v.stopAt) - now < 60000 ? 'failing' : ''] : '',
      [stateText[v.state] || v.state, 'state-' + v.state],
    ], { label: 'Activity', run: (id, b) => act('activity', id, b, 'Activity recorded for VM') });
  }

  function renderDLQ(d) {
    if (!d) return;
    $('dlq-error').textContent = d.error || '';
    const list = d.deadLetters || [];
    $('dlq-count').textContent = d.error ? '' : `(${list.length}${d.truncated ? '+, first ' + list.length + ' shown' : ''})`;
    syncRows('dlq', list, (x) => x.id, (x) => [
      x.id, x.sink, (x.type || '').replace(/^com\.cakework\./, ''), x.subject, [x.error, 'err'], [x.attempts, 'num'], ago(x.time),
    ], { label: 'Replay', run: (id, b) => act('replay', id, b, 'Replayed dead letter') });
  }

  function renderSinks(sinks) {
    const list = Object.entries(sinks || {}).map(([name, s]) => ({ name, ...s })).sort((a, b) => a.name.localeCompare(b.name));
    syncRows('sinks', list, (s) => s.name, (s) => [
      s.name + (s.disabled ? ' (disabled)' : ''),
      s.kind,
      [s.delivered, 'num'],
      [s.failed, 'num'],
      [s.pending === undefined ? '?' : s.pending, 'num'],
      [s.disabled ? s.disabledReason : s.lastError ? `${s.lastError} (${ago(s.lastErrorAt)})` : '', 'err'],
    ]);
  }

  function renderWatches(w) {
    if (!w) return;
    $('watches-error').textContent = w.error || '';
    const list = w.builds || [];
    $('watches-count').textContent = w.error ? '' : `(${list.length})`;
    syncRows('watches', list, (x) => x.id, (x) => [x.id, x.status || 'not seen yet', x.source, ago(x.addedAt)],
      { label: 'Unwatch', run: (id, b) => act('unwatch', id, b, 'Unwatched build') });
  }

  function renderPoller(p) {
    if (!p) {
      $('poller-info').textContent = 'The poller is off (no Cakework API key).';
      syncRows('poller', [], (x) => x, () => []);
      return;
    }
    const info = [];
    if (p.unauthorized) info.push('401 from Cakework: ' + p.unauthorized);
    if (p.pausedUntil && Date.parse(p.pausedUntil) > relNow()) info.push(`rate limited (429): paused for ${dur(Date.parse(p.pausedUntil) - relNow())}`);
    info.push(`${p.vmsKnown} VMs known.`);
    $('poller-info').textContent = info.join(' ');
    const list = Object.entries(p.schedules || {}).map(([name, s]) => ({ name, ...s })).sort((a, b) => a.name.localeCompare(b.name));
    syncRows('poller', list, (s) => s.name, (s) => [
      s.name, s.schedule, s.lastSuccess ? ago(s.lastSuccess) : 'never',
      s.failing ? [`failing since ${ago(s.failingSince)}${s.hint ? ' — ' + s.hint : ''}`, 'failing'] : 'ok',
      [s.lastError ? `${s.lastError} (${ago(s.lastErrorAt)})` : '', 'err'],
    ]);
  }

  // ---- events --------------------------------------------------------

  function globRe(g) {
    const esc = g.trim().replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
    return new RegExp(g.includes('*') ? `^${esc}$` : esc);
  }

  function matches(e) {
    const t = $('filter-type').value.trim();
    const s = $('filter-subject').value.trim();
    if (t && !globRe(t).test(e.type || '')) return false;
    if (s && !(e.subject || '').includes(s)) return false;
    return true;
  }

  function eventRow(e) {
    const li = el('li', 'fresh');
    li.dataset.type = e.type || '';
    li.dataset.subject = e.subject || '';
    li.append(el('span', 't', hhmmss(e.time)), el('span', 'ty', e.type || e.error), el('span', 's', e.subject || ''), el('code', '', e.data || ''));
    li.querySelector('code').title = e.data || '';
    li.hidden = !matches(e);
    return li;
  }

  function addEvent(e) {
    if (paused) {
      held.push(e);
      if (held.length > MAX_EVENTS) held.shift();
      $('pause').textContent = `Resume (${held.length} new)`;
      return;
    }
    const list = $('events');
    list.prepend(eventRow(e));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  $('pause').addEventListener('click', () => {
    paused = !paused;
    const b = $('pause');
    b.setAttribute('aria-pressed', String(paused));
    if (paused) {
      b.textContent = 'Resume';
      return;
    }
    b.textContent = 'Pause';
    const h = held;
    held = [];
    for (const e of h) addEvent(e);
  });

  function refilter() {
    for (const li of $('events').children) {
      li.hidden = !matches({ type: li.dataset.type, subject: li.dataset.subject });
    }
  }
  $('filter-type').addEventListener('input', refilter);
  $('filter-subject').addEventListener('input', refilter);

  $('watch-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('watch-id');
    const id = input.value.trim();
    if (!id) return;
    await act('watch', id, ev.submitter || input, 'Watching build');
    input.value = '';
  });

  setInterval(() => { if (!$('app').hidden) tickVMs(); }, 1000);
  init();
})();
