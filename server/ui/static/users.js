// The Users page (admins): the users with their role and activity; add one
// (its token is shown once), make one an admin or a member, remove one.
'use strict';

(() => {
  const { api, el, td, fmtTime, fmtAgo, showError } = dstack;
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
        td('Running jobs', String(u.running_jobs)),
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
