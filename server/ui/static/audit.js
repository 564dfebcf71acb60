// The Audit page (admins): who changed what on the server, when and from
// where, newest first, a page of GET /api/v1/audit at a time; refetched
// on the event stream's tick.
'use strict';

(() => {
  const { api, el, td, fmtTime, showError } = dstack;
  const tbody = document.querySelector('#audit tbody');
  const empty = document.getElementById('audit-empty');
  const errEl = document.getElementById('audit-error');
  const since = document.getElementById('audit-since');
  const more = document.getElementById('audit-more');
  const pageSize = 200;
  const hours = { '24h': 24, '7d': 7 * 24, '30d': 30 * 24 };
  let entries = [];
  let next = '';

  function sinceISO() {
    const h = hours[since.value];
    return h ? new Date(Date.now() - h * 3600 * 1000).toISOString() : '';
  }

  // detail is an entry's detail object as key=value pairs.
  function detail(d) {
    if (!d || typeof d !== 'object') return '';
    return Object.entries(d).map(([k, v]) => k + '=' + (typeof v === 'string' ? v : JSON.stringify(v))).join(' ');
  }

  function render() {
    tbody.replaceChildren(...entries.map((e) => el('tr', { dataset: { action: e.action, id: e.id } },
      td('Time', el('time', { datetime: e.at, title: e.at, text: fmtTime(e.at) })),
      td('User', e.user || '-'),
      td('Action', el('code', { text: e.action })),
      td('Target', e.target || ''),
      td('From', e.remote_addr || ''),
      td('Detail', el('span', { class: 'sub', text: detail(e.detail) })))));
    empty.hidden = entries.length > 0;
    document.getElementById('audit').hidden = entries.length === 0;
    more.hidden = !next;
  }

  async function page(after) {
    let cursor = '';
    const got = await api('GET', '/audit', {
      query: { since: sinceISO(), limit: pageSize, after },
      headers: (h) => { cursor = h.get('X-Dstack-Next-Cursor') || ''; },
    });
    return [got, cursor];
  }

  // refresh rereads the first page. On a tick it leaves the page alone
  // while older entries are shown, so that they do not vanish while read.
  let older = false;
  async function refresh(kinds) {
    if (kinds && older) return;
    older = false;
    try {
      const [got, cursor] = await page('');
      showError(errEl, null);
      entries = got;
      next = cursor;
      if (dstack.changed('audit', [entries, next])) render();
    } catch (e) {
      showError(errEl, e);
    }
  }

  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const [got, cursor] = await page(next);
      older = true;
      entries = entries.concat(got);
      next = cursor;
      render();
    } catch (e) {
      showError(errEl, e);
    } finally {
      more.disabled = false;
    }
  });
  since.addEventListener('change', () => refresh());
  dstack.live([], refresh);
  refresh();
})();
