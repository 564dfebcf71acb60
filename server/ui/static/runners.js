// The Runners page: self-hosted and on-demand runners, refetched when
// runners change.
'use strict';

(() => {
  const { api, el, td, badge, fmtMiB, fmtGPUs, fmtAgo, showError } = dstack;
  const tbody = document.querySelector('#runners tbody');
  const empty = document.getElementById('runners-empty');
  const errEl = document.getElementById('runners-error');
  let runners = [];

  function resources(r) {
    const res = r.resources || {};
    return [res.cpus ? res.cpus + ' CPU' : '', fmtMiB(res.memory_mib), res.disk_mib ? fmtMiB(res.disk_mib) + ' disk' : '']
      .filter(Boolean).join(' · ');
  }

  function render() {
    tbody.replaceChildren(...runners.map((r) => {
      const onDemand = Boolean(r.instance_type);
      const host = r.hostname && r.hostname !== r.name ? el('span', { class: 'sub', text: r.hostname }) : null;
      const state = r.interrupted_at ? el('span', { class: 'sub', text: 'interrupted: ' + (r.interruption_reason || 'the cloud reclaims this machine') })
        : r.instance_state && r.instance_state !== 'running' ? el('span', { class: 'sub', text: 'instance ' + r.instance_state }) : null;
      return el('tr', { dataset: { runner: r.name } },
        td('Name', el('span', { class: 'name', text: r.name }), host),
        td('Status', badge(r.status), state),
        td('Type', onDemand ? 'on-demand' : 'self-hosted'),
        td('Backend', r.backend || ''),
        td('Region', r.region || ''),
        td('Instance type', r.instance_type || ''),
        td('Purchase type', r.purchase_type || ''),
        td('Resources', resources(r)),
        td('GPUs', fmtGPUs((r.resources || {}).gpus) || 'none'),
        td('Current job', r.run_name ? el('a', { href: '/runs/' + encodeURIComponent(r.run_name), text: r.run_name }) : ''),
        el('td', { 'data-label': 'Last heartbeat', class: 'ago', dataset: { at: r.last_heartbeat || '' } }, fmtAgo(r.last_heartbeat)));
    }));
    empty.hidden = runners.length > 0;
    document.getElementById('runners').hidden = runners.length === 0;
  }

  async function refresh() {
    try {
      runners = await api('GET', '/runners');
      showError(errEl, null);
      if (dstack.changed('runners', runners)) render();
    } catch (e) {
      showError(errEl, e);
    }
  }

  setInterval(() => { // "last heartbeat" ages
    for (const cell of tbody.querySelectorAll('td.ago')) cell.textContent = fmtAgo(cell.dataset.at);
  }, 5000);
  dstack.live(['runners', 'instances'], refresh);
  refresh();
})();
