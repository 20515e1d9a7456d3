// The operator console: a small hand-written single-page app over the
// service's public REST routes (no private back door). The admin bearer token
// is kept in sessionStorage (this tab only) and sent on every call. No inline
// script or style: the page's Content-Security-Policy forbids both, so all
// markup is built with DOM calls and all text goes in as text, never HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'commerce.console.token';
  const STATUSES = ['RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED', 'COMPENSATION_FAILED'];
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  // ---- small helpers ------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An SVG element with attributes. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = v;
      else node.setAttribute(k, String(v));
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }

  const shortId = (id) => (id ? id.slice(0, 8) : '');
  const statusName = (s) => (s || '').replace(/^SAGA_STATUS_|^SAGA_STEP_STATUS_/, '');
  const time = (t) => (t ? new Date(t) : null);
  function fmtTime(t) {
    const d = time(t);
    return d ? d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '';
  }
  function fmtMs(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  }
  function badge(status) {
    const name = statusName(status);
    return el('span', { class: `badge b-${name.toLowerCase()}` }, name || 'UNKNOWN');
  }

  function announce(message, isError) {
    const box = $('status');
    box.hidden = false;
    box.className = isError ? 'status status-error' : 'status';
    box.textContent = message;
  }

  // ---- the API: the public REST routes, with the bearer token --------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    // Relative to the page, so a console behind a path prefix still works.
    const response = await fetch(path.replace(/^\//, ''), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : {}; } catch (_) { json = { message: text }; }
    if (!response.ok) {
      if (response.status === 401) signOut('Your token was refused (401): sign in again.');
      throw new ApiError(response.status, json);
    }
    return json;
  }

  function reasonOf(err) {
    const details = (err.body && err.body.details) || [];
    const info = details.find((d) => d.reason);
    return `${err.message}${info ? ` (${info.reason})` : ''}`;
  }

  // ---- sign in -------------------------------------------------------------

  function signedIn() { return !!sessionStorage.getItem(TOKEN_KEY); }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    if (message) $('login-error').textContent = message;
    location.hash = '#/login';
    route();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $('token').value.trim().replace(/^Bearer\s+/i, '');
    $('login-error').textContent = '';
    if (!token) { $('login-error').textContent = 'Enter a token.'; $('token').focus(); return; }
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      // Any admin-only route proves the role; ListSagas is the console's home.
      await api('GET', '/api/v1/admin/sagas?page_size=1');
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      $('login-error').textContent = err.status === 403
        ? 'This token has no admin role (403).'
        : `Sign-in failed: ${reasonOf(err)}`;
      $('token').focus();
      return;
    }
    $('token').value = '';
    if (location.hash === '#/sagas') { route(); startSampling(); } else location.hash = '#/sagas';
  }

  // ---- routing -------------------------------------------------------------

  const VIEWS = ['login', 'sagas', 'saga', 'dead-letters', 'projections'];

  function show(view) {
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    $('nav').hidden = view === 'login';
    for (const link of document.querySelectorAll('#nav a')) {
      const current = link.dataset.view === view || (view === 'saga' && link.dataset.view === 'sagas');
      if (current) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
    }
  }

  function parseHash() {
    const [path, query] = location.hash.replace(/^#/, '').split('?');
    return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query || '') };
  }

  function route() {
    const { parts, params } = parseHash();
    if (!signedIn()) { show('login'); $('token').focus(); return; }
    $('status').hidden = true;
    switch (parts[0]) {
      case 'saga': show('saga'); loadSaga(decodeURIComponent(parts[1] || '')); break;
      case 'dead-letters': show('dead-letters'); loadDeadLetters(); break;
      case 'projections': show('projections'); renderProjections(); break;
      default: show('sagas'); loadSagas(params); break;
    }
  }

  // ---- saga list -----------------------------------------------------------

  // Filters beyond status: the query parameter names of ListSagasRequest
  // (and CountSagasRequest), added to the form in init.
  const FILTERS = [];

  // A datetime-local value (the operator's local time) as RFC 3339, and back.
  const localToIso = (v) => { const d = new Date(v); return Number.isNaN(d.getTime()) ? v : d.toISOString(); };
  const isoToLocal = (v) => {
    const d = new Date(v);
    if (!v || Number.isNaN(d.getTime())) return '';
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const TIME = { type: 'datetime-local', toApi: localToIso, fromApi: isoToLocal };
  const list = { tokens: [''], page: 0 };

  function filterParams() {
    const p = new URLSearchParams();
    const status = $('f-status').value;
    if (status) p.set('status', `SAGA_STATUS_${status}`);
    for (const f of FILTERS) {
      const v = $(`f-${f.name}`).value.trim();
      if (v) p.set(f.param, f.toApi ? f.toApi(v) : v);
    }
    p.set('page_size', $('f-page-size').value);
    return p;
  }

  function applyFilters(event) {
    if (event) event.preventDefault();
    const p = filterParams();
    list.tokens = [''];
    list.page = 0;
    const hash = `#/sagas?${p.toString()}`;
    if (location.hash === hash) loadSagas(p); else location.hash = hash;
  }

  function fillFiltersFrom(params) {
    $('f-status').value = statusName(params.get('status') || '');
    for (const f of FILTERS) $(`f-${f.name}`).value = f.fromApi ? f.fromApi(params.get(f.param) || '') : (params.get(f.param) || '');
    if (params.get('page_size')) $('f-page-size').value = params.get('page_size');
  }

  async function loadSagas(params) {
    fillFiltersFrom(params);
    const query = filterParams();
    const token = list.tokens[list.page];
    if (token) query.set('page_token', token);
    const body = $('saga-table').tBodies[0];
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6 }, 'Loading…')));
    let answer;
    try {
      answer = await api('GET', `/api/v1/admin/sagas?${query}`);
    } catch (err) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'error' }, `Could not list sagas: ${reasonOf(err)}`)));
      return;
    }
    const sagas = answer.sagas || [];
    body.replaceChildren(...sagas.map(sagaRow));
    if (!sagas.length) body.append(el('tr', {}, el('td', { colspan: 6 }, 'No saga matches these filters.')));
    list.tokens[list.page + 1] = answer.next_page_token || '';
    $('saga-page').textContent = `Page ${list.page + 1}`;
    $('saga-prev').disabled = list.page === 0;
    $('saga-next').disabled = !answer.next_page_token;
    $('saga-caption').textContent = `Sagas, newest first: ${sagas.length} shown on page ${list.page + 1}`;
    loadCounts(query);
  }

  function sagaRow(s) {
    const href = `#/saga/${encodeURIComponent(s.saga_id)}`;
    return el('tr', { 'data-saga': s.saga_id },
      el('td', {}, el('a', { href, class: 'mono', 'aria-label': `Saga ${s.saga_id}` }, shortId(s.saga_id))),
      el('td', {}, badge(s.status)),
      el('td', {}, s.current_step || '—'),
      el('td', { class: 'mono' }, shortId(s.order_id)),
      el('td', {}, fmtTime(s.updated_at)),
      el('td', { class: 'wrap' }, s.last_error || ''));
  }

  // Counts per status under the list's filters (CountSagas), at the top.
  async function loadCounts(query) {
    const box = $('saga-counts');
    const p = new URLSearchParams(query);
    for (const key of ['status', 'page_size', 'page_token']) p.delete(key);
    const counts = {};
    try {
      const answer = await api('GET', `/api/v1/admin/sagas/counts?${p}`);
      // A count of 0 is left out of the JSON (proto3 defaults).
      for (const entry of answer.counts || []) counts[statusName(entry.status)] = String(entry.count || 0);
    } catch (_) {
      for (const status of STATUSES) counts[status] = '?';
    }
    box.replaceChildren(...STATUSES.map((status) => el('li', {},
      el('a', { href: `#/sagas?status=SAGA_STATUS_${status}`, class: `count b-${status.toLowerCase()}`, 'data-status': status },
        el('span', { class: 'count-n' }, counts[status] || '0'), ' ', status))));
  }

  // ---- one saga ------------------------------------------------------------

  let current = null; // { saga, history }

  async function loadSaga(id) {
    $('saga-title').textContent = `Saga ${id}`;
    $('timeline').replaceChildren(el('p', {}, 'Loading…'));
    let saga;
    try {
      saga = (await api('GET', `/api/v1/admin/sagas/${encodeURIComponent(id)}`)).saga;
    } catch (err) {
      $('timeline').replaceChildren(el('p', { class: 'error' }, `Could not load the saga: ${reasonOf(err)}`));
      return;
    }
    let history = [];
    let historyError = null;
    try {
      history = (await api('GET', `/api/v1/orders/${encodeURIComponent(saga.order_id)}/events`)).entries || [];
    } catch (err) { historyError = reasonOf(err); }
    current = { saga, history };
    renderSaga(saga, history, historyError);
  }

  function renderSaga(saga, history, historyError) {
    $('saga-title').textContent = `Saga ${shortId(saga.saga_id)} — ${statusName(saga.status)}`;
    const rows = [
      ['Status', badge(saga.status)],
      ['Saga id', el('span', { class: 'mono' }, saga.saga_id)],
      ['Order id', el('span', { class: 'mono' }, saga.order_id)],
      ['Current step', saga.current_step || '—'],
      ['Past the pivot', saga.past_pivot ? 'yes (payment captured: forward only)' : 'no (can still compensate)'],
      ['Created', fmtTime(saga.created_at)],
      ['Updated', fmtTime(saga.updated_at)],
      ['Deadline', fmtTime(saga.deadline) || '—'],
      ['Last error', saga.last_error || '—'],
      ['Compensation reason', saga.compensation_reason || '—'],
    ];
    $('saga-summary').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    const status = statusName(saga.status);
    const retryable = status === 'FAILED' || status === 'COMPENSATION_FAILED';
    $('act-retry').disabled = !retryable;
    // Only a failed compensation can be skipped (the operator undid it by hand).
    $('act-skip').disabled = status !== 'COMPENSATION_FAILED';
    // Once a capture was sent it may have happened: cancels are ignored from then (the pivot).
    const captureSent = (saga.steps || []).some((st) => st.name === 'capture_payment' && Number(st.attempts || 0) > 0);
    $('act-cancel').disabled = saga.past_pivot || captureSent || ['COMPLETED', 'COMPENSATED', 'COMPENSATING'].includes(status);

    const attempts = history.filter((e) => e.step_attempt).map((e) => ({ ...e.step_attempt, at: e.occurred_at }));
    $('timeline').replaceChildren(timeline(saga, attempts));

    $('steps-table').tBodies[0].replaceChildren(...(saga.steps || []).map((st) => el('tr', {},
      el('th', { scope: 'row' }, `${st.compensation ? '↩ ' : ''}${st.name}`),
      el('td', {}, statusName(st.status)),
      el('td', {}, String(st.attempts || 0)),
      el('td', { class: 'mono wrap' }, st.idempotency_key || ''),
      el('td', {}, st.duration_ms ? fmtMs(Number(st.duration_ms)) : '—'),
      el('td', { class: 'wrap' }, st.last_error ? `${st.last_grpc_code || ''} ${st.last_error}` : ''))));

    const actions = saga.operator_actions || [];
    $('actions-table').tBodies[0].replaceChildren(...(actions.length ? actions.map((a) => el('tr', {},
      el('td', {}, fmtTime(a.at)), el('td', {}, a.action), el('td', {}, a.step),
      el('td', {}, a.operator), el('td', { class: 'wrap' }, a.reason))) : [el('tr', {}, el('td', { colspan: 5 }, 'None yet.'))]));

    const list = $('history');
    if (historyError) { list.replaceChildren(el('li', { class: 'error' }, `Could not load the order's history: ${historyError}`)); return; }
    list.replaceChildren(...history.map(historyItem));
  }

  function historyItem(entry) {
    if (entry.event) {
      const e = entry.event;
      return el('li', { class: 'h-event' },
        el('span', { class: 'h-time' }, fmtTime(entry.occurred_at)),
        el('strong', {}, e.event_type), ` v${e.version}`,
        e.payload ? el('details', {}, el('summary', {}, 'payload'), el('pre', {}, JSON.stringify(e.payload, null, 2))) : null);
    }
    const a = entry.step_attempt;
    return el('li', { class: `h-attempt o-${a.outcome}` },
      el('span', { class: 'h-time' }, fmtTime(entry.occurred_at)),
      `${a.step} attempt ${a.attempt}: `, el('strong', {}, a.outcome), ` ${a.grpc_code || ''} (${fmtMs(Number(a.latency_ms || 0))})`,
      a.error ? el('div', { class: 'wrap' }, a.error) : null);
  }

  /**
   * The timeline picture: one row per step (forward and compensation) with a
   * bar from its first attempt to its end, each attempt as a block of its call
   * latency coloured by outcome, the waits between attempts as dashed
   * backoff lines, the pivot (capture_payment) and operator actions as
   * vertical marks.
   */
  function timeline(saga, attempts) {
    const steps = saga.steps || [];
    const start = time(saga.created_at).getTime();
    const ends = [time(saga.updated_at).getTime()];
    for (const st of steps) if (st.finished_at) ends.push(time(st.finished_at).getTime());
    for (const a of attempts) ends.push(time(a.at).getTime() + Number(a.latency_ms || 0));
    const end = Math.max(...ends, start + 1);
    const W = 960; const left = 190; const right = 20; const rowH = 34; const top = 44;
    const H = top + rowH * Math.max(steps.length, 1) + 40;
    const x = (t) => left + ((t - start) / (end - start)) * (W - left - right);
    // A mark's label stays inside the picture: to the left of marks near the right edge.
    const mark = (px, y, cls, text) => svg('text', {
      x: px > W - 160 ? px - 4 : px + 4, y, class: cls, 'text-anchor': px > W - 160 ? 'end' : 'start', text,
    });
    const actionTimes = (saga.operator_actions || []).map((a) => time(a.at).getTime());
    const out = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'tl-title tl-desc', class: 'tl', preserveAspectRatio: 'xMinYMin meet',
    });
    const described = steps.map((st) => {
      const own = attempts.filter((a) => a.step === st.name);
      return `${st.name}${st.compensation ? ' (compensation)' : ''}: ${statusName(st.status)}, ${own.length} attempt(s)${own.length ? ` (${own.map((a) => a.outcome).join(', ')})` : ''}`;
    }).join('; ');
    out.append(svg('title', { id: 'tl-title', text: `Timeline of saga ${saga.saga_id}` }),
      svg('desc', { id: 'tl-desc', text: `${described}. ${saga.past_pivot ? 'Past the pivot.' : 'Not past the pivot.'}` }));

    // Axis with ticks relative to the saga's creation.
    const axisY = H - 28;
    out.append(svg('line', { x1: left, y1: axisY, x2: W - right, y2: axisY, class: 'axis' }));
    for (let i = 0; i <= 5; i++) {
      const t = start + ((end - start) * i) / 5;
      out.append(svg('line', { x1: x(t), y1: top - 6, x2: x(t), y2: axisY + 4, class: 'grid' }),
        svg('text', { x: x(t), y: axisY + 18, class: 'tick', 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle', text: `+${fmtMs(t - start)}` }));
    }

    steps.forEach((st, i) => {
      const y = top + i * rowH;
      const own = attempts.filter((a) => a.step === st.name).sort((a, b) => time(a.at) - time(b.at));
      const g = svg('g', { class: `row ${st.compensation ? 'comp' : 'fwd'}`, 'data-step': st.name });
      g.append(svg('text', { x: left - 8, y: y + rowH / 2 + 4, 'text-anchor': 'end', class: 'label', text: `${st.compensation ? '↩ ' : ''}${st.name}` }));
      const s0 = st.started_at ? time(st.started_at).getTime() : own.length ? time(own[0].at).getTime() : null;
      if (s0 !== null) {
        const s1 = st.finished_at ? time(st.finished_at).getTime() : Math.max(end, s0);
        g.append(svg('rect', {
          x: x(s0), y: y + 6, width: Math.max(x(s1) - x(s0), 2), height: rowH - 12, rx: 3,
          class: `bar st-${statusName(st.status).toLowerCase()}`,
        }, svg('title', { text: `${st.name}: ${statusName(st.status)}, ${fmtTime(st.started_at)} → ${fmtTime(st.finished_at) || 'running'}` })));
      } else {
        g.append(svg('text', { x: left + 4, y: y + rowH / 2 + 4, class: 'pending', text: statusName(st.status).toLowerCase() }));
      }
      own.forEach((a, k) => {
        const a0 = time(a.at).getTime();
        const a1 = a0 + Number(a.latency_ms || 0);
        if (k > 0) {
          const prev = own[k - 1];
          const p1 = time(prev.at).getTime() + Number(prev.latency_ms || 0);
          if (a0 > p1) {
            // Retries ran out here and an operator resumed it: a wait for a person, not a backoff.
            const operator = actionTimes.some((t) => t >= p1 && t <= a0);
            g.append(svg('line', { x1: x(p1), y1: y + rowH / 2, x2: x(a0), y2: y + rowH / 2, class: operator ? 'wait-operator' : 'wait' },
              svg('title', { text: operator
                ? `${fmtMs(a0 - p1)} waiting for an operator before attempt ${a.attempt}`
                : `backoff wait ${fmtMs(a0 - p1)} before attempt ${a.attempt}` })));
          }
        }
        g.append(svg('rect', {
          x: x(a0), y: y + 10, width: Math.max(x(a1) - x(a0), 4), height: rowH - 20,
          class: `attempt o-${a.outcome}`, 'data-outcome': a.outcome,
        }, svg('title', { text: `${st.name} attempt ${a.attempt}: ${a.outcome} ${a.grpc_code || ''} in ${fmtMs(Number(a.latency_ms || 0))}${a.error ? ` — ${a.error}` : ''}` })));
      });
      out.append(g);
    });

    // The pivot: capture_payment's success.
    const capture = steps.find((st) => st.name === 'capture_payment' && !st.compensation);
    if (capture) {
      const row = steps.indexOf(capture);
      const y = top + row * rowH;
      out.append(svg('text', { x: 6, y: y + rowH / 2 + 4, class: 'pivot-label', text: '◆ pivot' }));
      if (saga.past_pivot && capture.finished_at) {
        const px = x(time(capture.finished_at).getTime());
        out.append(svg('line', { x1: px, y1: top - 12, x2: px, y2: axisY, class: 'pivot' }),
          mark(px, top - 16, 'pivot-label', 'pivot passed'));
      }
    }
    // Operator actions.
    for (const a of saga.operator_actions || []) {
      const px = x(time(a.at).getTime());
      out.append(svg('line', { x1: px, y1: top - 30, x2: px, y2: axisY, class: 'operator' },
        svg('title', { text: `${a.action} of ${a.step} by ${a.operator}: ${a.reason}` })),
      mark(px, top - 32, 'operator-label', `${a.action} (operator)`));
    }
    return out;
  }

  // ---- confirmation dialog -------------------------------------------------

  /**
   * Opens the dialog with `body` (nodes); `needsReason` shows the reason box.
   * Resolves with the reason (or '') on confirm, null on back/escape.
   */
  function confirmDialog(title, body, needsReason, confirmLabel) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-body').replaceChildren(...body);
    $('confirm-reason-wrap').hidden = !needsReason;
    $('confirm-reason').value = '';
    $('confirm-error').textContent = '';
    $('confirm-ok').textContent = confirmLabel;
    return new Promise((resolve) => {
      const done = (value) => {
        $('confirm-ok').removeEventListener('click', ok);
        $('confirm-cancel').removeEventListener('click', back);
        dialog.removeEventListener('cancel', back);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const ok = () => {
        const reason = $('confirm-reason').value.trim();
        if (needsReason && !reason) {
          $('confirm-error').textContent = 'A reason is required.';
          $('confirm-reason').focus();
          return;
        }
        done(reason);
      };
      const back = (event) => { if (event) event.preventDefault(); done(null); };
      $('confirm-ok').addEventListener('click', ok);
      $('confirm-cancel').addEventListener('click', back);
      dialog.addEventListener('cancel', back);
      dialog.showModal();
      (needsReason ? $('confirm-reason') : $('confirm-ok')).focus();
    });
  }

  function planList(plan) {
    if (!plan.length) return el('p', {}, 'Nothing would run.');
    return el('ol', { class: 'plan', id: 'plan' }, plan.map((p) => el('li', {},
      el('strong', {}, `${p.compensation ? '↩ ' : ''}${p.step}`), ' with idempotency key ', el('code', {}, p.idempotency_key))));
  }

  /** Retry or skip: the dry run first, its plan shown, then the real call. */
  async function retryOrSkip(skip) {
    const saga = current && current.saga;
    if (!saga) return;
    const path = `/api/v1/admin/sagas/${encodeURIComponent(saga.saga_id)}/retry`;
    let dry;
    try {
      dry = await api('POST', path, { dry_run: true, skip_failed_step: skip, reason: skip ? 'dry run' : '' });
    } catch (err) { announce(`Dry run refused: ${reasonOf(err)}`, true); return; }
    const verb = skip ? 'Skip the failed compensation' : 'Retry the failed step';
    const reason = await confirmDialog(`${verb} — dry-run plan`, [
      el('p', {}, `Dry run of saga ${shortId(saga.saga_id)} (${statusName(saga.status)}, failed at ${saga.current_step || '—'}). Nothing has changed yet. ${skip ? 'The failed compensation would be marked skipped, then these steps run:' : 'These steps would run, in order:'}`),
      planList(dry.plan || []),
    ], true, skip ? 'Confirm skip' : 'Confirm retry');
    if (reason === null) { announce('Nothing done: the dry run was not confirmed.'); return; }
    try {
      await api('POST', path, { dry_run: false, skip_failed_step: skip, reason });
      announce(`${skip ? 'Skipped' : 'Retried'} ${saga.current_step}: the saga runs again.`);
    } catch (err) { announce(`${verb} failed: ${reasonOf(err)}`, true); return; }
    await pollSaga(saga.saga_id, statusName(saga.status));
    announce(`${skip ? 'Skipped' : 'Retried'} ${saga.current_step}: saga now ${statusName(current.saga.status)}.`);
  }

  /**
   * Reloads the saga after an action until it has left `before` and stopped
   * moving (the workers pick it up asynchronously), for at most 15 s.
   */
  async function pollSaga(id, before) {
    for (let i = 0; i < 30; i++) {
      await loadSaga(id);
      const status = statusName(current && current.saga.status);
      if (status !== before && !['RUNNING', 'COMPENSATING'].includes(status)) return;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  const COMPENSATION_OF = {
    authorize_payment: 'void_payment', reserve_inventory: 'release_inventory', create_shipment: 'cancel_shipment',
  };

  /** Cancel an order: what would be compensated is shown first. */
  async function cancelOrder() {
    const saga = current && current.saga;
    if (!saga) return;
    const done = (saga.steps || []).filter((st) => !st.compensation && statusName(st.status) === 'SUCCEEDED' && COMPENSATION_OF[st.name]);
    const body = [
      el('p', {}, `Cancel order ${saga.order_id}. The saga then compensates what it has done, in reverse:`),
      done.length
        ? el('ol', { class: 'plan', id: 'plan' }, done.reverse().map((st) => el('li', {}, el('strong', {}, `↩ ${COMPENSATION_OF[st.name]}`), ` (undoes ${st.name}, key ${st.idempotency_key})`)).concat([el('li', {}, el('strong', {}, '↩ cancel_order'))]))
        : el('p', { id: 'plan' }, 'Nothing has succeeded yet: only the order is cancelled (cancel_order).'),
      el('p', {}, 'Not offered once a capture was sent (the pivot): from then the saga only retries forward.'),
    ];
    const reason = await confirmDialog('Cancel the order — what would be compensated', body, true, 'Confirm cancellation');
    if (reason === null) { announce('Nothing done: the cancellation was not confirmed.'); return; }
    try {
      await api('POST', `/api/v1/orders/${encodeURIComponent(saga.order_id)}/cancel`, { reason });
      announce('Cancellation accepted: compensation runs.');
    } catch (err) { announce(`Cancellation refused: ${reasonOf(err)}`, true); }
    await pollSaga(saga.saga_id, statusName(saga.status));
  }

  // ---- dead letters --------------------------------------------------------

  let deadLetters = [];

  async function loadDeadLetters(event) {
    if (event) event.preventDefault();
    const body = $('dl-table').tBodies[0];
    $('dl-detail').hidden = true;
    try {
      deadLetters = (await api('GET', `/api/v1/admin/dead-letters?page_size=${$('dl-page-size').value}`)).dead_letters || [];
    } catch (err) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'error' }, `Could not list dead letters: ${reasonOf(err)}`)));
      return;
    }
    body.replaceChildren(...deadLetters.map((d) => el('tr', {},
      el('td', {}, el('input', { type: 'checkbox', class: 'dl-pick', value: d.id, 'aria-label': `Select ${d.event_type} for ${d.projection}` })),
      el('td', {}, d.projection), el('td', {}, d.event_type), el('td', {}, String(d.deliveries)),
      el('td', {}, fmtTime(d.dead_lettered_at)),
      el('td', {}, el('button', { type: 'button', class: 'secondary', onclick: () => inspect(d) }, 'Inspect')))));
    if (!deadLetters.length) body.append(el('tr', {}, el('td', { colspan: 6 }, 'No dead letters.')));
  }

  function inspect(d) {
    const box = $('dl-detail');
    box.replaceChildren(el('h3', {}, `Dead letter ${d.id}`), el('dl', { class: 'summary' },
      ...[['Projection', d.projection], ['Event id', d.event_id], ['Event type', d.event_type],
        ['Deliveries', String(d.deliveries)], ['Dead-lettered', fmtTime(d.dead_lettered_at)], ['Last error', d.error]]
        .flatMap(([k, v]) => [el('dt', {}, k), el('dd', { class: 'wrap' }, v)])));
    box.hidden = false;
    box.focus();
  }

  async function replayDeadLetters() {
    const ids = [...document.querySelectorAll('.dl-pick:checked')].map((c) => c.value);
    const picked = ids.length ? deadLetters.filter((d) => ids.includes(d.id)) : deadLetters;
    if (!picked.length) { announce('No dead letters to replay.'); return; }
    // ReplayDeadLetters has no dry-run flag: the preview is the listed entries
    // the call would name, with their projections' current lag.
    let lag = {};
    try {
      for (const p of (await api('GET', '/api/v1/admin/projections')).projections || []) lag[p.name] = p.lag_events;
    } catch (_) { lag = {}; }
    const body = [
      el('p', {}, `${picked.length} entr${picked.length === 1 ? 'y' : 'ies'} would be re-delivered to their projection${ids.length ? '' : ' (none selected: all listed)'}:`),
      el('ul', { class: 'plan', id: 'plan' }, picked.map((d) => el('li', {},
        el('strong', {}, d.event_type), ` → ${d.projection} (lag now ${lag[d.projection] ?? '?'} events), after ${d.deliveries} deliveries; last error: ${d.error}`))),
    ];
    const ok = await confirmDialog('Replay dead letters — preview', body, false, 'Confirm replay');
    if (ok === null) { announce('Nothing replayed.'); return; }
    try {
      const r = await api('POST', '/api/v1/admin/dead-letters/replay', { ids: picked.map((d) => d.id) });
      const n = Number(r.replayed || 0);
      announce(`Replayed ${n} ${n === 1 ? 'entry' : 'entries'}.`);
    } catch (err) { announce(`Replay failed: ${reasonOf(err)}`, true); }
    loadDeadLetters();
  }

  // ---- projections and event consumers: lag sampled by the page ------------

  const SAMPLE_EVERY_MS = 5000;
  const KEEP_MS = 10 * 60 * 1000;
  // { at, projections: { name: lag }, consumers: { name: lag } }; a source whose
  // call failed has no entry in that sample (a gap, not a repeated value).
  const samples = [];
  let latest = [];
  let consumers = { list: null, error: null }; // ListConsumers' last answer, or why not
  let sampler = null;

  const lagsOf = (items) => Object.fromEntries(items.map((i) => [i.name, Number(i.lag_events || 0)]));

  async function sample() {
    if (!signedIn()) return;
    const [projections, feed] = await Promise.allSettled([
      api('GET', '/api/v1/admin/projections'),
      api('GET', '/api/v1/events/consumers'),
    ]);
    if (projections.status === 'rejected' && feed.status === 'rejected') return;
    const point = { at: Date.now() };
    if (projections.status === 'fulfilled') {
      latest = projections.value.projections || [];
      point.projections = lagsOf(latest);
    }
    if (feed.status === 'fulfilled') {
      consumers = { list: feed.value.consumers || [], error: null };
      point.consumers = lagsOf(consumers.list);
    } else {
      consumers = { list: consumers.list, error: reasonOf(feed.reason) };
    }
    samples.push(point);
    while (samples.length && samples[0].at < point.at - KEEP_MS) samples.shift();
    if (!$('view-projections').hidden) renderProjections();
  }

  function startSampling() {
    if (sampler) return;
    sample();
    sampler = setInterval(sample, SAMPLE_EVERY_MS);
  }

  function renderProjections() {
    $('proj-table').tBodies[0].replaceChildren(...latest.map((p) => el('tr', { 'data-projection': p.name },
      el('th', { scope: 'row' }, p.name), el('td', {}, String(p.checkpoint || 0)), el('td', {}, String(p.head || 0)),
      el('td', {}, String(p.lag_events || 0)),
      el('td', {}, p.rebuilding ? `rebuilding ${p.rebuild_replayed || 0}/${p.rebuild_total || 0}` : '—'))));
    if (!latest.length) $('proj-table').tBodies[0].append(el('tr', {}, el('td', { colspan: 5 }, 'Sampling…')));
    $('lag-chart').replaceChildren(lagChart({
      key: 'projections', attr: 'data-projection', id: 'lag-svg-title', height: 220, what: 'Projection lag',
    }));
    renderConsumers();
  }

  // Seconds as written in the table: the number, and a larger unit beside it
  // once minutes are easier to read.
  function fmtSeconds(s) {
    const n = Number(s || 0);
    if (n < 120) return n.toFixed(1);
    return `${n.toFixed(0)} (${n < 7200 ? `${(n / 60).toFixed(1)} min` : `${(n / 3600).toFixed(1)} h`})`;
  }

  const typeName = (t) => String(t).replace(/^EVENT_TYPE_/, '');

  function consumerRow(c) {
    const acked = Number(c.acked_position || 0);
    return el('tr', { 'data-consumer': c.name },
      el('th', { scope: 'row', class: 'mono' }, c.name),
      el('td', { class: 'wrap' }, (c.event_types || []).length ? c.event_types.map(typeName).join(', ') : 'all'),
      el('td', { class: 'c-acked' }, String(acked)),
      el('td', {}, acked ? fmtTime(c.acked_at) : `never (created ${fmtTime(c.created_at)})`),
      el('td', { class: 'c-lag-events' }, String(Number(c.lag_events || 0))),
      el('td', { class: 'c-lag-seconds' }, fmtSeconds(c.lag_seconds)));
  }

  function renderConsumers() {
    const body = $('consumer-table').tBodies[0];
    const { list, error } = consumers;
    const note = (text, cls) => el('tr', {}, el('td', { colspan: 6, class: cls }, text));
    if (list === null) {
      body.replaceChildren(note(error ? `Could not list event consumers: ${error}` : 'Sampling…', error ? 'error' : null));
    } else {
      body.replaceChildren(...list.map(consumerRow));
      if (!list.length) body.append(note('No event consumers: no sibling service has a named consumer of the order-event feed yet (CreateConsumer).', 'empty'));
      if (error) body.append(note(`Last sample failed, showing the one before: ${error}`, 'error'));
    }
    $('consumer-lag-chart').replaceChildren(lagChart({
      key: 'consumers', attr: 'data-consumer', id: 'consumer-lag-svg-title', height: 160, what: 'Event consumer lag',
    }));
  }

  const SERIES = ['#0b5cad', '#b3261e', '#1b7f3b', '#8a4b00', '#6a3aa2', '#00707a'];

  /**
   * Lag in events over the kept window, one line per name in `samples[*][key]`,
   * each line naming its series in the attribute `attr`.
   */
  function lagChart({ key, attr, id, height, what }) {
    const W = 640; const H = height; const left = 50; const bottom = 30; const top = 10; const right = 10;
    const kept = samples.filter((s) => s[key]);
    const names = [...new Set(kept.flatMap((s) => Object.keys(s[key])))].sort();
    const now = Date.now();
    const t0 = now - KEEP_MS;
    const max = Math.max(1, ...kept.flatMap((s) => Object.values(s[key])));
    const x = (t) => left + ((t - t0) / KEEP_MS) * (W - left - right);
    const y = (v) => H - bottom - (v / max) * (H - top - bottom);
    const last = kept.length ? kept[kept.length - 1][key] : {};
    const out = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': id, class: 'lag' },
      svg('title', { id, text: `${what} in events over the last 10 minutes, ${kept.length} samples; latest: ${names.map((n) => `${n} ${last[n] ?? 0}`).join(', ') || 'none'}` }));
    out.append(svg('line', { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: 'axis' }),
      svg('line', { x1: left, y1: top, x2: left, y2: H - bottom, class: 'axis' }),
      svg('text', { x: left - 6, y: top + 8, 'text-anchor': 'end', class: 'tick', text: String(max) }),
      svg('text', { x: left - 6, y: H - bottom, 'text-anchor': 'end', class: 'tick', text: '0' }),
      svg('text', { x: left, y: H - 8, class: 'tick', text: '−10 min' }),
      svg('text', { x: W - right, y: H - 8, 'text-anchor': 'end', class: 'tick', text: 'now' }));
    names.forEach((name, i) => {
      const points = kept.filter((s) => name in s[key]).map((s) => `${x(s.at).toFixed(1)},${y(s[key][name]).toFixed(1)}`);
      if (points.length) {
        out.append(svg('polyline', { points: points.join(' '), fill: 'none', stroke: SERIES[i % SERIES.length], 'stroke-width': 2, [attr]: name }));
      }
      out.append(svg('text', { x: W - right - 4, y: top + 12 + i * 14, 'text-anchor': 'end', fill: SERIES[i % SERIES.length], class: 'tick', text: name }));
    });
    return out;
  }

  // ---- wiring --------------------------------------------------------------

  function addFilter(f) {
    FILTERS.push(f);
    const input = el('input', { id: `f-${f.name}`, name: f.name, type: f.type || 'text', autocomplete: 'off', placeholder: f.placeholder || '' });
    $('extra-filters').append(el('div', { class: 'field' }, el('label', { for: `f-${f.name}` }, f.label), input));
  }

  function init() {
    for (const s of STATUSES) $('f-status').append(el('option', { value: s }, s));
    addFilter({ name: 'current_step', param: 'current_step', label: 'Current step', placeholder: 'capture_payment' });
    addFilter({ name: 'failure_reason_code', param: 'failure_reason_code', label: 'Failure reason', placeholder: 'OUT_OF_STOCK' });
    addFilter({ name: 'customer_id', param: 'customer_id', label: 'Customer' });
    addFilter({ name: 'order_id', param: 'order_id', label: 'Order id' });
    addFilter({ name: 'created_after', param: 'created_after', label: 'Created from', ...TIME });
    addFilter({ name: 'created_before', param: 'created_before', label: 'Created before', ...TIME });
    addFilter({ name: 'updated_after', param: 'updated_after', label: 'Updated from', ...TIME });
    addFilter({ name: 'updated_before', param: 'updated_before', label: 'Updated before', ...TIME });
    $('login-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut('Signed out.'));
    $('saga-filters').addEventListener('submit', applyFilters);
    $('clear-filters').addEventListener('click', () => { $('saga-filters').reset(); applyFilters(); });
    $('saga-prev').addEventListener('click', () => { if (list.page > 0) { list.page -= 1; loadSagas(parseHash().params); } });
    $('saga-next').addEventListener('click', () => { if (list.tokens[list.page + 1]) { list.page += 1; loadSagas(parseHash().params); } });
    $('act-retry').addEventListener('click', () => retryOrSkip(false));
    $('act-skip').addEventListener('click', () => retryOrSkip(true));
    $('act-cancel').addEventListener('click', cancelOrder);
    $('act-refresh').addEventListener('click', () => current && loadSaga(current.saga.saga_id));
    $('dl-form').addEventListener('submit', loadDeadLetters);
    $('dl-replay').addEventListener('click', replayDeadLetters);
    window.addEventListener('hashchange', () => {
      if (!parseHash().parts.length || parseHash().parts[0] !== 'sagas') { list.tokens = ['']; list.page = 0; }
      route();
      if (signedIn()) startSampling();
    });
    route();
    if (signedIn()) startSampling();
  }

  document.addEventListener('DOMContentLoaded', init);
}());
