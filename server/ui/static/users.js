// The Users page (admins): the users with their role and activity; add one
// (its token is shown once), make one an admin or a member, cap their running
// jobs, set their storage quota, remove one.
'use strict';

(() => {
  const { api, el, td, fmtTime, fmtAgo, fmtBytes, showError } = dstack;
  const GiB = 1024 * 1024 * 1024;
  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector('#users tbody');
  const errEl = $('users-error');
  let users = [];

  function render() {
    tbody.replaceChildren(...users.map((u) => {
      const role = el('select', { 'aria-label': 'Role of ' + u.name, class: 'role' },
        el('option', { value: 'member', selected: !u.admin, text: 'member' }),
        el('option', { value: 'admin', selected: u.admin, text: 'admin' }));
      role.addEventListener('change', async () => {
        showError(errEl, null);
        role.disabled = true;
        try {
          await api('PATCH', '/users/' + encodeURIComponent(u.name), { body: { admin: role.value === 'admin' } });
        } catch (e) {
          showError(errEl, e);
        }
        await refresh();
      });
      // A change of a field is sent as soon as it is made.
      const patch = async (input, body) => {
        showError(errEl, null);
        input.disabled = true;
        try {
          await api('PATCH', '/users/' + encodeURIComponent(u.name), { body });
        } catch (e) {
          showError(errEl, e);
        }
        await refresh();
      };
      const maxRunning = el('input', { type: 'number', min: '0', step: '1', class: 'max-running',
        'aria-label': 'Most running jobs of ' + u.name + ' (0: no cap)', value: String(u.max_running) });
      maxRunning.addEventListener('change', () => {
        const n = Number(maxRunning.value);
        if (!Number.isInteger(n) || n < 0) {
          showError(errEl, new Error('Most running jobs: give a whole number, 0 for no cap'));
          return;
        }
        patch(maxRunning, { max_running: n });
      });
      const quota = el('input', { type: 'number', min: '0', step: 'any', class: 'quota',
        'aria-label': 'Storage quota of ' + u.name + ' in GiB (empty: the server default; 0: none)',
        placeholder: 'default', value: u.storage_quota == null ? '' : String(u.storage_quota / GiB) });
      quota.addEventListener('change', () => {
        if (quota.value.trim() === '') {
          patch(quota, { storage_quota_default: true });
          return;
        }
        const gib = Number(quota.value);
        if (!(gib >= 0)) {
          showError(errEl, new Error('Storage quota: give a size in GiB, 0 for none, or leave it empty for the server default'));
          return;
        }
        patch(quota, { storage_quota: Math.round(gib * GiB) });
      });
      const limit = u.storage_quota == null ? u.storage_quota_default : u.storage_quota;
      const used = fmtBytes(u.storage_used) + (limit ? ' of ' + fmtBytes(limit) : '') +
        (u.storage_quota == null ? (limit ? ' (default)' : '') : '');
      const rm = el('button', { type: 'button', class: 'danger', text: 'Remove', 'aria-label': 'Remove ' + u.name });
      rm.addEventListener('click', async () => {
        if (!confirm(`Remove ${u.name}? Their tokens, sessions and self-hosted runners stop working at once; their runs stay.`)) return;
        showError(errEl, null);
        rm.disabled = true;
        try {
          await api('DELETE', '/users/' + encodeURIComponent(u.name));
        } catch (e) {
          showError(errEl, e);
        }
        await refresh();
      });
      return el('tr', { dataset: { user: u.name } },
        td('Name', el('span', { class: 'name', text: u.name })),
        td('Role', role),
        td('Created', fmtTime(u.created_at)),
        td('Last seen', u.last_seen_at ? fmtAgo(u.last_seen_at) : 'never'),
        td('Running jobs', String(u.running_jobs) + (u.max_running ? ' of ' + u.max_running : '')),
        td('Most running', maxRunning),
        td('Storage used', el('span', { class: 'storage', text: used })),
        td('Quota (GiB)', quota),
        td('', rm));
    }));
  }

  async function refresh() {
    try {
      users = await api('GET', '/users');
      render();
    } catch (e) {
      showError(errEl, e);
    }
  }

  const form = $('user-form');
  const formErr = $('user-form-error');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(formErr, null);
    $('user-token').hidden = true;
    const add = $('user-add');
    add.disabled = true;
    try {
      const res = await api('POST', '/users', { body: { name: $('user-name').value.trim(), admin: $('user-admin').checked } });
      $('user-token-name').textContent = res.user.name;
      $('user-token-value').textContent = res.token;
      $('user-token').hidden = false;
      form.reset();
      await refresh();
    } catch (e) {
      showError(formErr, e);
    } finally {
      add.disabled = false;
    }
  });

  refresh();
})();
