// dstack web UI: what every page shares. Pages call the server's HTTP API
// (the one the CLI uses) with the session cookie, send the session's CSRF
// token on every change, and refetch when GET /api/v1/events says something
// changed. The DOM is built with createElement and textContent only.
'use strict';

const dstack = (() => {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : '';

  // APIError is an error answer of the API: its message is meant for people.
  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function toLogin() {
    const next = location.pathname;
    location.assign('/login?' + new URLSearchParams({ next }).toString());
  }

  // api calls the API: method, path (under /api/v1), an optional JSON body
  // and query. It resolves to the decoded JSON (null for no content) and
  // rejects with an APIError. A refused session goes to the login page,
  // unless opts.stay. opts.headers, if given, is called with the response's
  // headers.
  async function api(method, path, opts = {}) {
    let url = '/api/v1' + path;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) {
        if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
      }
      const qs = q.toString();
      if (qs) url += '?' + qs;
    }
    const headers = { Accept: 'application/json' };
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal: opts.signal };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new APIError(0, 'network', 'The server cannot be reached: ' + e.message);
    }
    if (opts.headers) opts.headers(resp.headers);
    if (resp.status === 204) return null;
    const type = resp.headers.get('Content-Type') || '';
    const body = type.startsWith('application/json') ? await resp.json().catch(() => null) : await resp.text();
    if (resp.ok) return body;
    if (resp.status === 401 && !opts.stay) toLogin();
    if (body && body.error && body.error.message) {
      throw new APIError(resp.status, body.error.code, body.error.message);
    }
    throw new APIError(resp.status, 'http', `The server answered ${resp.status} ${resp.statusText}`);
  }

  // el makes an element: props are attributes (class, href...), `text` its
  // text, `on` its event listeners; children are nodes or strings.
  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (v === true) e.setAttribute(k, '');
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // td is a table cell labelled for narrow screens.
  function td(label, ...children) {
    return el('td', { 'data-label': label }, ...children);
  }

  // showError shows err's message in elem, or hides elem for no error.
  function showError(elem, err) {
    if (!elem) return;
    if (!err) {
      elem.hidden = true;
      elem.textContent = '';
      return;
    }
    elem.textContent = typeof err === 'string' ? err : err.message;
    elem.hidden = false;
  }

  const finished = new Set(['done', 'failed', 'stopped', 'aborted']);

  function badge(status) {
    return el('span', { class: 'status ' + status, text: status });
  }

  function fmtDuration(ms) {
    if (ms < 0 || !isFinite(ms)) return '';
    let s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  // span is how long from start to end (now while end is unset).
  function span(start, end) {
    if (!start) return '';
    return fmtDuration((end ? Date.parse(end) : Date.now()) - Date.parse(start));
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    const now = new Date();
    const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
    if (d.toDateString() !== now.toDateString()) Object.assign(opts, { month: 'short', day: 'numeric' });
    return d.toLocaleString(undefined, opts);
  }

  function fmtAgo(iso) {
    if (!iso) return '';
    const ms = Date.now() - Date.parse(iso);
    if (ms < 5000) return 'just now';
    return fmtDuration(ms) + ' ago';
  }

  function fmtMiB(mib) {
    if (!mib) return '';
    if (mib >= 1024) return (Math.round(mib / 102.4) / 10) + ' GiB';
    return mib + ' MiB';
  }

  function fmtBytes(n) {
    if (n < 1024) return n + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (Math.round(v * 10) / 10) + ' ' + units[i];
  }

  function fmtGPUs(gpus) {
    if (!gpus || !gpus.length) return '';
    const count = {};
    for (const g of gpus) {
      const k = g.name + (g.memory_mib ? ' ' + fmtMiB(g.memory_mib) : '');
      count[k] = (count[k] || 0) + 1;
    }
    return Object.entries(count).map(([k, n]) => `${n}× ${k}`).join(', ');
  }

  // live calls refresh(changed) when the server says some of kinds changed
  // (and on its periodic tick, and after a reconnect); a burst of events
  // makes one call, changed being the kinds it named.
  function live(kinds, refresh) {
    const dot = document.getElementById('live');
    const want = new Set([...kinds, 'tick']);
    const pending = new Set();
    let timer = null;
    const flush = () => {
      timer = null;
      const ks = [...pending];
      pending.clear();
      refresh(ks);
    };
    const queue = (k) => {
      pending.add(k);
      if (!timer) timer = setTimeout(flush, 100);
    };
    let opened = false;
    let es = null;
    const connect = () => {
      es = new EventSource('/api/v1/events');
      es.addEventListener('open', () => {
        if (dot) { dot.classList.add('on'); dot.title = 'Live: updates as they happen'; }
        if (opened) queue('tick'); // missed events while away: refetch
        opened = true;
      });
      es.addEventListener('error', () => {
        if (dot) { dot.classList.remove('on'); dot.title = 'Reconnecting for live updates…'; }
        if (es.readyState === EventSource.CLOSED) {
          // The browser gives up on an error answer: a refused session
          // goes to the login page (api does that), anything else is
          // tried again.
          api('GET', '/me').then(() => setTimeout(connect, 5000), () => setTimeout(connect, 5000));
        }
      });
      for (const k of want) es.addEventListener(k, () => queue(k));
    };
    connect();
    window.addEventListener('pagehide', () => es.close());
  }

  // changed reports whether data differs from what it was the last time it
  // was given under key: pages redraw only what changed, so that a refetch
  // does not replace the element under the user's pointer.
  const seen = new Map();
  function changed(key, data) {
    const s = JSON.stringify(data);
    if (seen.get(key) === s) return false;
    seen.set(key, s);
    return true;
  }

  // chart fetches the SVG chart at url (a path of this server), laid out
  // for the width of box, and shows it in box in place of the one there;
  // query adds parameters. The server renders the chart and escapes what it
  // holds; the SVG is parsed as XML, never as HTML, and the page's policy
  // runs no script from it. A chart that did not change is left as it is.
  // It resolves when the chart shows, and rejects with an APIError.
  const charts = new WeakMap();
  async function chart(box, url, query = {}) {
    const width = Math.round(box.clientWidth || 720);
    const q = new URLSearchParams({ ...query, width: String(width) });
    let resp;
    try {
      resp = await fetch(url + '?' + q.toString(), { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'image/svg+xml' } });
    } catch (e) {
      throw new APIError(0, 'network', 'The server cannot be reached: ' + e.message);
    }
    const type = resp.headers.get('Content-Type') || '';
    if (resp.redirected && new URL(resp.url).pathname === '/login') toLogin();
    if (!resp.ok || !type.startsWith('image/svg+xml')) {
      const body = type.startsWith('application/json') ? await resp.json().catch(() => null) : null;
      if (body && body.error && body.error.message) throw new APIError(resp.status, body.error.code, body.error.message);
      throw new APIError(resp.status, 'http', `The chart could not be loaded: the server answered ${resp.status} ${resp.statusText}`);
    }
    const text = await resp.text();
    if (charts.get(box) === text && box.firstElementChild) return;
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    const svg = doc.documentElement;
    if (svg.namespaceURI !== 'http://www.w3.org/2000/svg' || svg.localName !== 'svg') {
      throw new APIError(resp.status, 'http', 'The chart could not be read');
    }
    charts.set(box, text);
    box.replaceChildren(document.importNode(svg, true));
    box.dataset.width = String(width);
  }

  // onResize calls fn when the width of box changed (a phone turned, a
  // window resized), at most once per burst of changes.
  function onResize(box, fn) {
    let timer = null;
    new ResizeObserver(() => {
      const w = Math.round(box.clientWidth);
      if (String(w) === box.dataset.width) return;
      clearTimeout(timer);
      timer = setTimeout(fn, 200);
    }).observe(box);
  }

  // fmtMoney writes an amount of currency (USD as $).
  function fmtMoney(v, currency) {
    if (v === undefined || v === null) return '';
    const n = Number(v);
    const digits = n !== 0 && Math.abs(n) < 0.01 ? 4 : 2;
    const s = n.toFixed(digits);
    return currency === 'USD' || !currency ? '$' + s : s + ' ' + currency;
  }

  function fmtHours(h) {
    if (h === undefined || h === null) return '';
    return (Math.round(h * 100) / 100).toFixed(2);
  }

  // copyText puts text on the clipboard; resolves true when it worked.
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      const ta = el('textarea', { readonly: true, 'aria-hidden': 'true' });
      ta.value = text;
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.append(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      ta.remove();
      return ok;
    }
  }

  function setup() {
    const out = document.getElementById('signout');
    if (out) {
      out.addEventListener('click', async () => {
        try {
          await api('DELETE', '/session', { stay: true });
        } finally {
          location.assign('/login');
        }
      });
    }
    // Copy buttons copy the text of the element data-copy names.
    for (const b of document.querySelectorAll('button[data-copy]')) {
      b.addEventListener('click', async () => {
        const src = document.getElementById(b.dataset.copy);
        const ok = src && await copyText(src.textContent.trim());
        const label = b.dataset.label || b.textContent;
        b.dataset.label = label;
        b.textContent = ok ? 'Copied' : 'Copy failed: select the text';
        setTimeout(() => { b.textContent = label; }, 2000);
      });
    }
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', setup);
  else setup();

  return { api, APIError, el, td, showError, finished, badge, span, fmtDuration, fmtTime, fmtAgo, fmtMiB, fmtBytes, fmtGPUs, live, copyText, changed,
    chart, onResize, fmtMoney, fmtHours };
})();
