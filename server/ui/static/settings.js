// The Settings page: the user's token (rendered by the server, shown on
// demand), the AWS credentials form, the Kubernetes cluster (its form an
// admin's only) with its nodes' instance types, and the on-demand switch and
// limits.
// Changes that would terminate instances are first sent with dry_run=true,
// as the CLI does, and made only once the user confirms.
'use strict';

(() => {
  const { api, el, td, fmtMiB, fmtGPUs, fmtTime, fmtAgo, showError } = dstack;
  const $ = (id) => document.getElementById(id);

  // ---- Token ----
  const showBtn = $('token-show');
  showBtn.addEventListener('click', () => {
    const show = showBtn.getAttribute('aria-pressed') !== 'true';
    showBtn.setAttribute('aria-pressed', String(show));
    showBtn.textContent = show ? 'Hide' : 'Show';
    for (const e of document.querySelectorAll('code.revealed')) e.hidden = !show;
    for (const e of document.querySelectorAll('code.masked')) e.hidden = show;
  });

  // ---- Tokens ----
  const tokBody = document.querySelector('#tokens-list tbody');
  const tokErr = $('tokens-error');

  async function loadTokens() {
    let toks;
    try {
      toks = await api('GET', '/tokens');
      showError(tokErr, null);
    } catch (e) {
      showError(tokErr, e);
      return;
    }
    tokBody.replaceChildren(...toks.map((t) => {
      const rv = el('button', { type: 'button', class: 'danger', text: 'Revoke', 'aria-label': 'Revoke ' + t.name });
      rv.addEventListener('click', async () => {
        const warn = t.current ? ' This page signed in with it: you will be signed out.' : '';
        if (!confirm(`Revoke token ${t.name}? It stops working at once.${warn}`)) return;
        showError(tokErr, null);
        rv.disabled = true;
        try {
          await api('DELETE', '/tokens/' + encodeURIComponent(t.id));
        } catch (e) {
          showError(tokErr, e);
        }
        if (t.current) location.assign('/login');
        else loadTokens();
      });
      return el('tr', { dataset: { token: t.name } },
        td('Name', el('span', { class: 'name', text: t.name }), t.current ? el('span', { class: 'sub', text: 'this session' }) : null),
        td('Created', fmtTime(t.created_at)),
        td('Last used', t.last_used_at ? fmtAgo(t.last_used_at) : 'never'),
        td('Expires', t.expires_at ? fmtTime(t.expires_at) : 'never'),
        td('', rv));
    }));
  }

  const tokForm = $('token-form');
  const tokFormErr = $('token-form-error');
  tokForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(tokFormErr, null);
    $('token-new').hidden = true;
    const btn = $('token-create');
    btn.disabled = true;
    try {
      const t = await api('POST', '/tokens', { body: { name: $('token-name').value.trim(), expires_in: $('token-expires').value.trim() } });
      $('token-new-name').textContent = t.name;
      $('token-new-value').textContent = t.token;
      $('token-new').hidden = false;
      tokForm.reset();
      await loadTokens();
    } catch (e) {
      showError(tokFormErr, e);
    } finally {
      btn.disabled = false;
    }
  });
  loadTokens();

  const plural = (n, what) => (n === 1 ? `1 ${what}` : `${n} ${what}s`);

  // ---- AWS ----
  const awsForm = $('aws-form');
  const awsErr = $('aws-error');
  const awsSaved = $('aws-saved');
  const awsStatus = $('aws-status');
  const awsClear = $('aws-clear');
  const field = (n) => awsForm.elements.namedItem(n);

  function fillAWS(c) {
    field('access_key_id').value = c.access_key_id || '';
    field('region').value = c.region || '';
    field('artifact_bucket').value = c.artifact_bucket || '';
    // The secret is never sent back: the field starts empty, and an empty
    // secret keeps the stored one.
    const secret = field('secret_access_key');
    secret.value = '';
    secret.placeholder = c.configured ? (c.secret_access_key || 'stored') + ' (leave empty to keep)' : '';
    secret.required = !c.configured;
    awsClear.hidden = !c.configured;
    const parts = [];
    if (c.configured) {
      parts.push('Configured' + (c.updated_at ? ' on ' + new Date(c.updated_at).toLocaleString() : '') + '.');
      if (c.ami) parts.push('AMI ' + c.ami + (c.gpu_ami ? ', GPU AMI ' + c.gpu_ami : '') + '.');
    } else {
      parts.push('Not configured.');
    }
    awsStatus.textContent = parts.join(' ');
  }

  async function loadAWS() {
    try {
      fillAWS(await api('GET', '/aws'));
      for (const e of awsForm.elements) e.disabled = false;
    } catch (e) {
      if (e.status === 404) {
        awsStatus.textContent = 'This server does not manage AWS credentials: ' + e.message;
        for (const x of awsForm.elements) x.disabled = true;
        return;
      }
      showError(awsErr, e);
    }
  }

  awsForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(awsErr, null);
    awsSaved.hidden = true;
    const body = {
      access_key_id: field('access_key_id').value.trim(),
      secret_access_key: field('secret_access_key').value.trim(),
      region: field('region').value.trim(),
      artifact_bucket: field('artifact_bucket').value.trim(),
    };
    const save = $('aws-save');
    save.disabled = true;
    try {
      const c = await api('PUT', '/aws', { body });
      if (c && typeof c === 'object' && 'configured' in c) fillAWS(c);
      else await loadAWS();
      awsSaved.textContent = 'Saved.';
      awsSaved.hidden = false;
      field('secret_access_key').value = '';
    } catch (e) {
      showError(awsErr, e);
    } finally {
      save.disabled = false;
    }
  });

  awsClear.addEventListener('click', async () => {
    if (!confirm('Clear the AWS credentials? The server can launch no EC2 instances until they are set again.')) return;
    showError(awsErr, null);
    try {
      await api('DELETE', '/aws');
      await loadAWS();
    } catch (e) {
      showError(awsErr, e);
    }
  });

  // ---- Kubernetes ----
  // Members see the cluster and its offers; the form is an admin's only
  // (the template leaves it out for members).
  const kubeForm = $('kube-form');
  const kubeErr = $('kube-error');
  const kubeSaved = $('kube-saved');
  const kubeStatus = $('kube-status');
  const kubeClear = $('kube-clear');
  const kubeOffersBody = document.querySelector('#kube-offers tbody');
  const kubeOffersErr = $('kube-offers-error');
  let kube = { configured: false };

  function fmtSeconds(s) {
    if (!s) return '';
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = s % 60;
    return [h ? h + 'h' : '', m ? m + 'm' : '', r ? r + 's' : ''].filter(Boolean).join(' ');
  }

  function fillKube(c) {
    kube = c;
    $('kube-info').hidden = !c.configured;
    if (c.configured) {
      let st = 'Configured' + (c.updated_at ? ' on ' + new Date(c.updated_at).toLocaleString() : '') + (c.updated_by ? ' by ' + c.updated_by : '') + '.';
      if (c.instance_types && c.instance_types.startsWith('unknown')) st += ' The cluster\'s instance types are ' + c.instance_types + '.';
      kubeStatus.textContent = st;
      $('kube-context').textContent = c.context + (c.in_cluster ? ' (the server Pod\'s service account)' : '');
      $('kube-server').textContent = c.server || (c.in_cluster ? 'the cluster the server runs in' : '');
      $('kube-namespace').textContent = c.namespace;
      $('kube-image').textContent = c.runner_image || 'none: runner Pods download dstack-runner from the server';
      $('kube-timeout').textContent = fmtSeconds(c.schedule_timeout_seconds);
      $('kube-reserve').textContent = `${c.reserve_millicpu || 0}m CPU, ${c.reserve_memory_mib || 0} MiB`;
    } else {
      kubeStatus.textContent = 'Not configured.';
    }
    if (!kubeForm) return;
    const f = (n) => kubeForm.elements.namedItem(n);
    // The kubeconfig is never sent back: an empty one keeps the stored one.
    f('kubeconfig').value = '';
    $('kube-file').value = '';
    const stored = c.configured && !c.in_cluster;
    f('kubeconfig').placeholder = stored ? 'stored (leave empty to keep)' : 'apiVersion: v1\nkind: Config\n…';
    f('in_cluster').checked = Boolean(c.in_cluster);
    f('context').value = c.configured && !c.in_cluster ? c.context : '';
    f('namespace').value = c.namespace || '';
    f('runner_image').value = c.runner_image || '';
    // The values in effect: saving the form keeps them.
    f('schedule_timeout').value = c.configured ? String(c.schedule_timeout_seconds || '') : '';
    f('reserve_cpu').value = c.configured ? String(c.reserve_millicpu || 0) : '';
    f('reserve_memory').value = c.configured ? String(c.reserve_memory_mib || 0) : '';
    kubeClear.hidden = !c.configured;
    inCluster();
  }

  // inCluster turns the kubeconfig's fields off while the server's own
  // service account is to be used.
  function inCluster() {
    const on = $('kube-in-cluster').checked;
    for (const id of ['kube-file', 'kube-kubeconfig', 'kube-context-in']) $(id).disabled = on;
  }

  function renderKubeOffers(offers) {
    kubeOffersBody.replaceChildren(...offers.map((o) => {
      const r = o.resources || {};
      const add = el('button', { type: 'button', class: 'link add-limit', text: 'Add limit', 'aria-label': `Add a limit of ${o.instance_type} (${o.purchase_type})` });
      add.addEventListener('click', () => {
        openLimitForm();
        regionIn.value = o.region;
        $('limit-type').value = o.instance_type;
        $('limit-spot').checked = o.purchase_type === 'spot';
        loadOffers();
        $('limit-max').focus();
      });
      return el('tr', { dataset: { instanceType: o.instance_type, purchaseType: o.purchase_type } },
        td('Instance type', o.instance_type),
        td('Purchase type', o.purchase_type),
        td('CPU', r.cpus ? String(r.cpus) : ''),
        td('Memory', fmtMiB(r.memory_mib)),
        td('GPU', fmtGPUs(r.gpus) || 'none'),
        td('', add));
    }));
    $('kube-offers').hidden = offers.length === 0;
    $('kube-offers-empty').hidden = offers.length > 0;
  }

  async function loadKubeOffers() {
    if (!kube.configured) {
      showError(kubeOffersErr, null);
      $('kube-offers').hidden = true;
      $('kube-offers-empty').hidden = true;
      return;
    }
    try {
      renderKubeOffers(await api('GET', '/offers', { query: { backend: 'kubernetes', region: kube.context } }));
      showError(kubeOffersErr, null);
    } catch (e) {
      $('kube-offers').hidden = true;
      $('kube-offers-empty').hidden = true;
      showError(kubeOffersErr, e);
    }
  }

  async function loadKube() {
    try {
      fillKube(await api('GET', '/kubernetes'));
    } catch (e) {
      showError(kubeErr || kubeOffersErr, e);
      return;
    }
    await loadKubeOffers();
  }

  // reserve is a reserve field for the API: empty the default (0), 0 none
  // (-1).
  const reserve = (v) => (v.trim() === '' ? 0 : Number(v) === 0 ? -1 : Number(v));

  if (kubeForm) {
    $('kube-in-cluster').addEventListener('change', inCluster);
    $('kube-file').addEventListener('change', async (ev) => {
      const file = ev.target.files[0];
      if (!file) return;
      showError(kubeErr, null);
      try {
        $('kube-kubeconfig').value = await file.text();
      } catch (e) {
        showError(kubeErr, 'Cannot read ' + file.name + ': ' + e.message);
      }
    });
    kubeForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError(kubeErr, null);
      kubeSaved.hidden = true;
      const f = (n) => kubeForm.elements.namedItem(n);
      const inC = f('in_cluster').checked;
      const body = {
        kubeconfig: inC ? '' : f('kubeconfig').value,
        context: inC ? '' : f('context').value.trim(),
        namespace: f('namespace').value.trim(),
        in_cluster: inC,
        runner_image: f('runner_image').value.trim(),
        schedule_timeout_seconds: Number(f('schedule_timeout').value || 0),
        reserve_millicpu: reserve(f('reserve_cpu').value),
        reserve_memory_mib: reserve(f('reserve_memory').value),
      };
      const save = $('kube-save');
      save.disabled = true;
      try {
        fillKube(await api('PUT', '/kubernetes', { body }));
        kubeSaved.textContent = 'Saved: the cluster accepted the configuration.';
        kubeSaved.hidden = false;
        await loadKubeOffers();
        loadOnDemand();
      } catch (e) {
        showError(kubeErr, e);
      } finally {
        save.disabled = false;
      }
    });
    kubeClear.addEventListener('click', async () => {
      showError(kubeErr, null);
      kubeSaved.hidden = true;
      try {
        // Asked first, as the CLI does: refused (409) while runner Pods run.
        await api('DELETE', '/kubernetes', { query: { dry_run: 'true' } });
        if (!confirm(`Clear the Kubernetes configuration (context ${kube.context})? On-demand runners no longer run in the cluster; your limits are kept.`)) return;
        await api('DELETE', '/kubernetes');
        kubeSaved.textContent = 'Cleared.';
        kubeSaved.hidden = false;
        await loadKube();
        loadOnDemand();
      } catch (e) {
        showError(kubeErr, e);
      }
    });
  }

  // ---- On-demand switch ----
  const odSwitch = $('od-enabled');
  const odStatus = $('od-status');
  const odErr = $('od-error');

  async function loadOnDemand() {
    try {
      const st = await api('GET', '/on-demand');
      odSwitch.checked = st.enabled;
      let text = `${st.enabled ? 'Enabled' : 'Disabled'}: ${plural(st.limits, 'limit')}, ${plural(st.running, 'instance')} running.`;
      if (!st.backends.length) {
        text += ' This server has no backend to launch instances on: run `dstack server` on a host with Docker for the local backend, or configure AWS or Kubernetes above.';
      } else {
        text += ' Backends: ' + st.backends.join(', ') + '.';
      }
      odStatus.textContent = text;
    } catch (e) {
      showError(odErr, e);
    }
  }

  odSwitch.addEventListener('change', async () => {
    const enabled = odSwitch.checked;
    showError(odErr, null);
    try {
      if (!enabled) {
        const p = await api('PUT', '/on-demand', { query: { dry_run: 'true' }, body: { enabled } });
        if (p.terminating > 0 && !confirm(`Disabling on-demand runners would terminate ${plural(p.terminating, 'running instance')}. Continue?`)) {
          odSwitch.checked = true;
          return;
        }
      }
      await api('PUT', '/on-demand', { body: { enabled } });
    } catch (e) {
      showError(odErr, e);
    }
    loadOnDemand();
  });

  // ---- Limits ----
  const limitsBody = document.querySelector('#limits tbody');
  const limitsEmpty = $('limits-empty');
  const limitsErr = $('limits-error');
  let limits = [];
  let editing = ''; // the ID of the limit whose maximum is being edited

  const limitName = (l) => `${l.instance_type} (${l.purchase_type}) in region ${l.region}`;
  const limitKey = (l) => ({ backend: l.backend, region: l.region, instance_type: l.instance_type, purchase_type: l.purchase_type });

  function capacityNote(l) {
    if (!l.unavailable_since) return '';
    const d = new Date(l.unavailable_since);
    const opts = { hour: '2-digit', minute: '2-digit' };
    if (d.toDateString() !== new Date().toDateString()) Object.assign(opts, { month: 'short', day: 'numeric' });
    return 'No capacity since ' + d.toLocaleString(undefined, opts);
  }

  // putLimit sets a limit, asking first when that would terminate instances.
  async function putLimit(req) {
    const p = await api('PUT', '/limits', { query: { dry_run: 'true' }, body: req });
    if (p.terminating > 0 && !confirm(`Lowering the limit of ${limitName(p.limit)} from ${p.previous_max} to ${req.max} would terminate ${plural(p.terminating, 'running instance')}. Continue?`)) {
      return null;
    }
    return api('PUT', '/limits', { body: req });
  }

  async function deleteLimit(l) {
    showError(limitsErr, null);
    try {
      const p = await api('DELETE', '/limits', { query: { ...limitKey(l), dry_run: 'true' } });
      let q = `Delete the limit of ${limitName(l)}?`;
      if (p.terminating > 0) q += ` It would terminate ${plural(p.terminating, 'running instance')}.`;
      if (!confirm(q)) return;
      await api('DELETE', '/limits', { query: limitKey(l) });
      await loadLimits();
    } catch (e) {
      showError(limitsErr, e);
    }
  }

  function maxCell(l) {
    if (editing !== l.id) {
      return td('Maximum', el('span', { class: 'max', text: String(l.max) }), ' ',
        el('button', { type: 'button', class: 'link edit', text: 'Edit', on: { click: () => { editing = l.id; renderLimits(); } } }));
    }
    const input = el('input', { type: 'number', min: '0', max: '1000', value: String(l.max), 'aria-label': 'Maximum of ' + limitName(l) });
    const save = async () => {
      showError(limitsErr, null);
      try {
        const done = await putLimit({ ...limitKey(l), max: Number(input.value) });
        if (!done) return;
        editing = '';
        await loadLimits(true);
      } catch (e) {
        showError(limitsErr, e);
      }
    };
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') save();
      if (ev.key === 'Escape') { editing = ''; renderLimits(); }
    });
    setTimeout(() => input.focus(), 0);
    return td('Maximum', input, ' ',
      el('button', { type: 'button', class: 'save', text: 'Save', on: { click: save } }), ' ',
      el('button', { type: 'button', class: 'cancel', text: 'Cancel', on: { click: () => { editing = ''; renderLimits(); } } }));
  }

  function renderLimits() {
    limitsBody.replaceChildren(...limits.map((l) => {
      const r = l.resources || {};
      const note = capacityNote(l);
      return el('tr', { dataset: { limit: l.id, instanceType: l.instance_type } },
        td('Region', l.region),
        td('Instance type', l.instance_type),
        td('Purchase type', l.purchase_type),
        maxCell(l),
        td('CPU', r.cpus ? String(r.cpus) : ''),
        td('Memory', fmtMiB(r.memory_mib)),
        td('GPU', fmtGPUs(r.gpus)),
        td('Running', String(l.running)),
        td('Note', note ? el('span', { title: l.unavailable_reason || '', text: note }) : ''),
        td('', el('button', { type: 'button', class: 'danger delete', text: 'Delete', on: { click: () => deleteLimit(l) } })));
    }));
    limitsEmpty.hidden = limits.length > 0;
    $('limits').hidden = limits.length === 0;
  }

  // loadLimits refetches the limits and redraws them when they changed (or
  // when force).
  async function loadLimits(force) {
    try {
      limits = await api('GET', '/limits');
      if (editing && !limits.some((l) => l.id === editing)) editing = '';
      // A row being edited keeps its input: render the others later.
      if ((dstack.changed('limits', limits) || force) && !editing) renderLimits();
    } catch (e) {
      showError(limitsErr, e);
    }
  }

  // ---- Add limit ----
  const limitForm = $('limit-form');
  const limitErr = $('limit-error');
  const regionIn = $('limit-region');
  const offersList = $('offers');
  let offersFor = null;

  async function loadOffers() {
    const region = regionIn.value.trim();
    if (offersFor === region) return;
    offersFor = region;
    try {
      const offers = await api('GET', '/offers', { query: { region } });
      const types = [...new Set(offers.map((o) => o.instance_type))];
      offersList.replaceChildren(...types.map((t) => el('option', { value: t })));
      if (!regionIn.value && offers.length) regionIn.placeholder = offers[0].region + ' (default)';
    } catch (_) {
      offersList.replaceChildren(); // the form's own error says why on submit
    }
  }

  function openLimitForm() {
    limitForm.hidden = false;
    $('limit-new').hidden = true;
    showError(limitErr, null);
  }
  $('limit-new').addEventListener('click', () => {
    openLimitForm();
    loadOffers();
    $('limit-type').focus();
  });
  $('limit-cancel').addEventListener('click', () => {
    limitForm.hidden = true;
    $('limit-new').hidden = false;
    limitForm.reset();
  });
  let regionTimer = null;
  regionIn.addEventListener('input', () => {
    clearTimeout(regionTimer);
    regionTimer = setTimeout(loadOffers, 400);
  });

  limitForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(limitErr, null);
    const req = {
      region: regionIn.value.trim(),
      instance_type: $('limit-type').value.trim(),
      purchase_type: $('limit-spot').checked ? 'spot' : 'on-demand',
      max: Number($('limit-max').value),
    };
    const add = $('limit-add');
    add.disabled = true;
    try {
      const res = await putLimit(req);
      if (res) {
        limitForm.reset();
        limitForm.hidden = true;
        $('limit-new').hidden = false;
        await loadLimits();
      }
    } catch (e) {
      showError(limitErr, e);
    } finally {
      add.disabled = false;
    }
  });

  dstack.live(['limits', 'instances'], () => {
    loadLimits();
    loadOnDemand();
  });
  loadAWS();
  loadKube();
  loadOnDemand();
  loadLimits();
})();
