// The login page: signs in with a token through POST /api/v1/session, which
// sets the session cookie, then goes where it was sent from. The token
// travels only in the request's body.
'use strict';

(() => {
  const form = document.getElementById('login-form');
  const input = document.getElementById('token');
  const errEl = document.getElementById('login-error');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    dstack.showError(errEl, null);
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await dstack.api('POST', '/session', { body: { token: input.value.trim() }, stay: true });
      input.value = '';
      location.assign(form.dataset.next || '/runs');
    } catch (e) {
      dstack.showError(errEl, e);
      input.select();
    } finally {
      button.disabled = false;
    }
  });
})();
