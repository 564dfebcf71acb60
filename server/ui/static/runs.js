// The Runs page: the user's runs, newest first, refetched when runs change.
'use strict';

(() => {
  const { api, el, td, badge, span, fmtTime, showError, finished } = dstack;
  const tbody = document.querySelector('#runs tbody');
  const empty = document.getElementById('runs-empty');
  const errEl = document.getElementById('runs-error');
  const all = document.getElementById('show-all');
  all.checked = new URLSearchParams(location.search).get('all') === 'true';
  let runs = [];

  // started is when the run's first job started, if one did.
  const started = (run) => run.jobs.map((j) => j.started_at).filter(Boolean).sort()[0];

  function runners(run) {
    return [...new Set(run.jobs.map((j) => j.runner_name).filter(Boolean))].join(', ');
  }

  function render() {
    tbody.replaceChildren(...runs.map((run) => {
      const reason = run.jobs.map((j) => j.status_reason).find(Boolean);
      return el('tr', { dataset: { run: run.name } },
        td('Run', el('a', { href: '/runs/' + encodeURIComponent(run.name), text: run.name })),
        td('Workflow', run.workflow),
        td('Status', badge(run.status), reason && !finished.has(run.status) ? el('span', { class: 'sub', text: reason }) : null),
        td('Runner', runners(run)),
        td('Submitted', fmtTime(run.submitted_at)),
        el('td', { 'data-label': 'Duration', class: 'num duration', dataset: { start: started(run) || '', end: run.finished_at || '' } },
          span(started(run), run.finished_at)));
    }));
    empty.hidden = runs.length > 0;
    document.getElementById('runs').hidden = runs.length === 0;
  }

  async function refresh() {
    try {
      // A page of runs: when more follow, the page says so.
      let more = false;
      runs = await api('GET', '/runs', {
        query: { all: all.checked ? 'true' : '' },
        headers: (h) => { more = h.has('X-Dstack-Next-Cursor'); },
      });
      document.getElementById('runs-cut').hidden = !more;
      showError(errEl, null);
      if (dstack.changed('runs', runs)) render();
    } catch (e) {
      showError(errEl, e);
    }
  }

  all.addEventListener('change', () => {
    const u = new URL(location.href);
    if (all.checked) u.searchParams.set('all', 'true');
    else u.searchParams.delete('all');
    history.replaceState(null, '', u);
    refresh();
  });
  // Durations of unfinished runs tick.
  setInterval(() => {
    for (const cell of tbody.querySelectorAll('td.duration')) {
      if (cell.dataset.start && !cell.dataset.end) cell.textContent = span(cell.dataset.start, '');
    }
  }, 1000);
  dstack.live(['runs', 'runners'], refresh);
  refresh();
})();
