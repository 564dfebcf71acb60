// The Usage page: on-demand instances per limit over time against each
// limit's maximum, the cost per day stacked by user or instance type (both
// SVG charts the server draws, refetched for the width they are shown at),
// and the usage table of GET /api/v1/usage. A member sees their own usage,
// an admin everyone's: the server decides, the page shows what it gets.
// Everything is refetched when instances, limits or runs change.
'use strict';

(() => {
  const { api, el, td, showError, chart, onResize, fmtMoney, fmtHours } = dstack;
  const since = document.getElementById('usage-since');
  const by = document.getElementById('usage-by');
  const errEl = document.getElementById('usage-error');
  const scope = document.getElementById('usage-scope');
  const instancesBox = document.getElementById('instances-chart');
  const dailyBox = document.getElementById('daily-chart');
  const tbody = document.querySelector('#usage tbody');
  const tfoot = document.querySelector('#usage tfoot');
  const keyHead = document.getElementById('usage-key');
  const empty = document.getElementById('usage-empty');
  const keyNames = { user: 'User', limit: 'Limit', 'instance-type': 'Instance type', day: 'Day' };

  const stack = () => document.querySelector('input[name="stack"]:checked').value;

  // Each part shows its own error; the first one shows on the page.
  const errors = new Map();
  function report(part, err) {
    if (err) errors.set(part, err); else errors.delete(part);
    showError(errEl, errors.values().next().value || null);
  }

  async function refreshInstances() {
    try {
      await chart(instancesBox, instancesBox.dataset.src, { since: since.value });
      report('instances', null);
    } catch (e) {
      report('instances', e);
    }
  }

  async function refreshDaily() {
    try {
      await chart(dailyBox, dailyBox.dataset.src, { since: since.value, stack: stack() });
      report('daily', null);
    } catch (e) {
      report('daily', e);
    }
  }

  function row(r, currency, label) {
    return [
      td(keyNames[by.value], label),
      td('Instance hours', fmtHours(r.instance_hours)),
      td('Job hours', fmtHours(r.job_hours)),
      td('Idle hours', fmtHours(r.idle_hours)),
      td('Cost', fmtMoney(r.cost, currency)),
      td('Idle cost', fmtMoney(r.idle_cost, currency)),
    ];
  }

  async function refreshTable() {
    let rep;
    try {
      rep = await api('GET', '/usage', { query: { since: since.value, by: by.value } });
      report('table', null);
    } catch (e) {
      report('table', e);
      return;
    }
    scope.textContent = rep.all ? 'Everyone\u2019s usage (you are an admin).' : 'Your usage: admins see everyone\u2019s.';
    if (!dstack.changed('usage', rep)) return;
    keyHead.textContent = keyNames[rep.by] || keyNames[by.value];
    const rows = rep.rows || [];
    tbody.replaceChildren(...rows.map((r) => el('tr', { dataset: { key: r.key } },
      ...row(r, rep.currency, r.key || (rep.by === 'user' ? '(no job)' : r.key)))));
    tfoot.replaceChildren(rows.length ? el('tr', { class: 'total' }, ...row(rep.total, rep.currency, 'Total')) : '');
    empty.hidden = rows.length > 0;
  }

  function refresh() {
    refreshInstances();
    refreshDaily();
    refreshTable();
  }

  since.addEventListener('change', refresh);
  by.addEventListener('change', refreshTable);
  for (const r of document.querySelectorAll('input[name="stack"]')) r.addEventListener('change', refreshDaily);
  onResize(instancesBox, refreshInstances);
  onResize(dailyBox, refreshDaily);
  dstack.live(['instances', 'limits', 'runs'], refresh);
  refresh();
})();
