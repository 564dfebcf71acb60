// A run's page: its jobs, what they cost on on-demand instances, a timeline
// of their phases (an SVG chart the server draws), the output of one job followed as it is written
// (GET /api/v1/jobs/{id}/logs?follow=true, resumed from the byte offset
// reached when the stream breaks), and its artifacts to download.
'use strict';

(() => {
  const { api, el, td, badge, span, fmtTime, fmtBytes, showError, finished, chart, onResize, fmtMoney } = dstack;
  const name = document.getElementById('run').dataset.run;
  const statusEl = document.getElementById('run-status');
  const errEl = document.getElementById('run-error');
  const info = document.getElementById('run-info');
  const jobsBody = document.querySelector('#jobs tbody');
  const select = document.getElementById('log-job');
  const logEl = document.getElementById('log');
  const logState = document.getElementById('log-state');
  const artBody = document.querySelector('#artifacts tbody');
  const artEmpty = document.getElementById('artifacts-empty');
  const stopBtn = document.getElementById('stop');
  const abortBtn = document.getElementById('abort');
  const timelineBox = document.getElementById('timeline');
  const active = new Set(['downloading', 'running', 'uploading']);

  let run = null;
  let picked = false; // the user chose the job to show
  let follower = null; // {id, ctl}
  const maxLog = 2000000; // characters kept on the page

  const pathURL = (p) => p.split('/').map(encodeURIComponent).join('/');

  function renderInfo() {
    const started = run.jobs.map((j) => j.started_at).filter(Boolean).sort()[0];
    const rows = [
      ['Workflow', run.workflow],
      ['Submitted', fmtTime(run.submitted_at)],
      ['Duration', span(started, run.finished_at)],
      ['Cost', cost(run.cost)],
    ];
    info.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v || '—' })]));
    statusEl.replaceChildren(badge(run.status));
    statusEl.className = '';
    const open = !finished.has(run.status);
    stopBtn.hidden = !open;
    abortBtn.hidden = !open;
  }

  // cost is what a run or a job cost on on-demand instances: `-` when it
  // ran on self-hosted runners only, empty when it has not run.
  function cost(c) {
    if (!c) return '';
    const hours = c.instance_hours ? ` (${(Math.round(c.instance_hours * 100) / 100).toFixed(2)} instance hours)` : '';
    if (!c.cost && !c.instance_hours && c.self_hosted) return '-';
    return fmtMoney(c.cost, c.currency) + hours;
  }

  function renderJobs() {
    jobsBody.replaceChildren(...run.jobs.map((j) => el('tr', { dataset: { job: j.id } },
      td('Workflow', j.workflow),
      td('Status', badge(j.status), j.status_reason ? el('span', { class: 'sub', text: j.status_reason }) : null,
        j.log_missing ? el('span', { class: 'sub', text: `log incomplete: ${j.log_missing} bytes not stored` }) : null),
      td('Runner', j.runner_name || ''),
      td('Attempt', String(j.attempt + 1),
        j.checkpoint ? el('span', { class: 'sub', text: `checkpoint ${fmtTime(j.checkpoint.created_at)} by attempt ${j.checkpoint.attempt + 1}: ${j.checkpoint.files} files, ${fmtBytes(j.checkpoint.size)}` }) : null),
      td('Started', fmtTime(j.started_at)),
      td('Duration', span(j.started_at, j.finished_at)),
      td('Exit code', j.exit_code === undefined || j.exit_code === null ? '' : String(j.exit_code)),
      td('Cost', cost(j.cost) || '—'))));
  }

  // chosen is the job whose output to show: the user's pick, else the job
  // running now, else the last one that started, else the run's own.
  function chosen() {
    if (picked && run.jobs.some((j) => j.id === select.value)) return select.value;
    const act = run.jobs.find((j) => active.has(j.status));
    if (act) return act.id;
    const startedJobs = run.jobs.filter((j) => j.started_at || finished.has(j.status));
    if (startedJobs.length) return startedJobs[startedJobs.length - 1].id;
    return run.jobs[run.jobs.length - 1].id;
  }

  function renderSelect(id) {
    const opts = run.jobs.map((j) => el('option', { value: j.id, text: `${j.workflow} (${j.status})` }));
    select.replaceChildren(...opts);
    select.value = id;
  }

  function appendLog(text) {
    if (!text) return;
    const atBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
    // Colours and cursor moves are not drawn: drop the escape sequences.
    logEl.append(text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ''));
    if (logEl.textContent.length > maxLog) {
      logEl.textContent = '… (earlier output not shown)\n' + logEl.textContent.slice(-maxLog / 2);
    }
    if (atBottom) logEl.scrollTop = logEl.scrollHeight;
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); });
  });

  const jobOf = (id) => run && run.jobs.find((j) => j.id === id);

  // follow streams job id's output into the page until the job finishes or
  // another job is chosen.
  async function follow(id) {
    if (follower && follower.id === id) return;
    if (follower) follower.ctl.abort();
    const ctl = new AbortController();
    follower = { id, ctl };
    logEl.textContent = '';
    const decoder = new TextDecoder();
    let offset = 0;
    let failures = 0;
    while (!ctl.signal.aborted) {
      const job = jobOf(id);
      const done = job && finished.has(job.status);
      logState.textContent = done ? '' : 'following…';
      try {
        const resp = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/logs?follow=true&offset=${offset}`,
          { credentials: 'same-origin', cache: 'no-store', signal: ctl.signal });
        if (!resp.ok) {
          const body = await resp.json().catch(() => null);
          if (resp.status === 401) location.assign('/login?' + new URLSearchParams({ next: location.pathname }));
          throw new Error(body && body.error ? body.error.message : `status ${resp.status}`);
        }
        const reader = resp.body.getReader();
        for (;;) {
          const { done: end, value } = await reader.read();
          if (end) break;
          offset += value.length;
          failures = 0;
          appendLog(decoder.decode(value, { stream: true }));
        }
        // The stream ends when the job has finished, or when the server
        // went away: ask which.
        const now = await api('GET', '/runs/' + encodeURIComponent(name)).catch(() => null);
        if (now) { run = now; }
        const j = jobOf(id);
        if (!j || finished.has(j.status)) {
          appendLog(decoder.decode());
          logState.textContent = offset ? '' : 'no output';
          return;
        }
        await sleep(1000, ctl.signal);
      } catch (e) {
        if (ctl.signal.aborted) return;
        failures++;
        logState.textContent = 'reconnecting (' + e.message + ')…';
        await sleep(Math.min(1000 * failures, 10000), ctl.signal);
      }
    }
  }

  async function refreshArtifacts() {
    try {
      const files = await api('GET', `/runs/${encodeURIComponent(name)}/artifacts`);
      if (!dstack.changed('artifacts', files)) return;
      artBody.replaceChildren(...files.map((f) => el('tr', {},
        td('Workflow', f.workflow),
        td('Path', el('code', { text: f.path })),
        td('Size', fmtBytes(f.size)),
        td('', el('a', {
          href: `/api/v1/jobs/${encodeURIComponent(f.job_id)}/artifacts/${pathURL(f.path)}`,
          download: f.path.split('/').pop(), text: 'Download',
        })))));
      artEmpty.hidden = files.length > 0;
      document.getElementById('artifacts').hidden = files.length === 0;
    } catch (e) {
      showError(errEl, e);
    }
  }

  async function refreshTimeline() {
    try {
      await chart(timelineBox, `/runs/${encodeURIComponent(name)}/timeline.svg`);
    } catch (e) {
      showError(errEl, e);
    }
  }

  let lastStatus = '';
  async function refresh(kinds) {
    try {
      run = await api('GET', '/runs/' + encodeURIComponent(name));
    } catch (e) {
      showError(errEl, e);
      return;
    }
    showError(errEl, null);
    const id = chosen();
    const runChanged = dstack.changed('run', [run, id]);
    if (runChanged) {
      renderInfo();
      renderJobs();
      renderSelect(id);
    }
    // A run in flight grows on the timeline with time, so ticks redraw it too.
    if (runChanged || (kinds && !finished.has(run.status))) refreshTimeline();
    follow(id);
    if (run.status !== lastStatus || !finished.has(run.status)) refreshArtifacts();
    lastStatus = run.status;
  }

  select.addEventListener('change', () => {
    picked = true;
    follow(select.value);
  });

  async function stop(abort) {
    const what = abort
      ? `Abort run ${name}? Its jobs stop at once and their artifacts are not uploaded.`
      : `Stop run ${name}? Its jobs stop and upload their artifacts.`;
    if (!confirm(what)) return;
    try {
      run = await api('POST', `/runs/${encodeURIComponent(name)}/stop`, { body: { abort } });
      showError(errEl, null);
      refresh();
    } catch (e) {
      showError(errEl, e);
    }
  }
  stopBtn.addEventListener('click', () => stop(false));
  abortBtn.addEventListener('click', () => stop(true));

  // Durations of a run in flight tick.
  setInterval(() => {
    if (run && !finished.has(run.status)) {
      renderInfo();
      renderJobs();
    }
  }, 1000);
  onResize(timelineBox, refreshTimeline);
  dstack.live(['runs', 'instances'], refresh);
  refresh();
})();
