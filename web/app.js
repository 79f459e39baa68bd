// app.js — the alias page: creates an alias through the JSON API, shows it
// with a copy button, and builds the bookmarklet for the chosen settings.
'use strict';

// The bookmarklet's code. It runs on other sites, so it is self-contained
// (no library, nothing loaded from elsewhere) and talks to this server's API
// by CORS. Arguments are baked into the link when the page builds it.
function mailkeepBookmarklet(cfg) {
  if (window.__mailkeepBookmarklet) window.__mailkeepBookmarklet.cancel();
  var banner = document.createElement('div');
  banner.setAttribute('role', 'status');
  banner.textContent = 'mailkeep: click an e-mail field to fill in a new alias (Esc cancels)';
  var s = banner.style;
  s.position = 'fixed'; s.top = '10px'; s.right = '10px'; s.zIndex = '2147483647';
  s.background = '#1f6feb'; s.color = '#fff'; s.padding = '8px 12px'; s.borderRadius = '6px';
  s.font = '14px system-ui, sans-serif'; s.boxShadow = '0 2px 6px rgba(0,0,0,.3)';
  document.body.appendChild(banner);

  function cleanup() {
    document.removeEventListener('click', onClick, true);
    document.removeEventListener('keydown', onKey, true);
    if (banner.parentNode) banner.parentNode.removeChild(banner);
    window.__mailkeepBookmarklet = null;
  }
  function onKey(e) { if (e.key === 'Escape') cleanup(); }
  function showError(input, text) {
    var box = document.createElement('div');
    box.className = '__mailkeep_error';
    box.setAttribute('role', 'alert');
    box.textContent = 'mailkeep: ' + text;
    var r = input.getBoundingClientRect(), st = box.style;
    st.position = 'absolute'; st.left = (r.left + window.scrollX) + 'px'; st.top = (r.bottom + window.scrollY + 4) + 'px';
    st.zIndex = '2147483647'; st.background = '#b42318'; st.color = '#fff'; st.padding = '4px 8px';
    st.borderRadius = '4px'; st.font = '13px system-ui, sans-serif';
    document.body.appendChild(box);
    setTimeout(function () { if (box.parentNode) box.parentNode.removeChild(box); }, 10000);
  }
  function fill(input, value) {
    input.value = value;
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }
  function onClick(e) {
    var input = e.target;
    if (!input || input.tagName !== 'INPUT' || !/^(email|text|)$/i.test(input.getAttribute('type') || '')) return;
    e.preventDefault();
    cleanup();
    fetch(cfg.origin + '/api/v1/aliases', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ target: cfg.target, days: cfg.days, max_usage: cfg.uses })
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body, retry: r.headers.get('Retry-After') }; });
    }).then(function (res) {
      if (res.ok) return fill(input, res.body.alias);
      var text = res.body.description || res.body.error || 'error';
      if (res.body.error === 'rate-limited' && res.retry) text = 'too many aliases; try again in ' + res.retry + ' s';
      showError(input, text);
    }).catch(function (err) {
      showError(input, 'cannot reach ' + cfg.origin + ' (' + err.message + ')');
    });
  }
  document.addEventListener('click', onClick, true);
  document.addEventListener('keydown', onKey, true);
  window.__mailkeepBookmarklet = { cancel: cleanup };
}

function bookmarkletHref(settings) {
  var cfg = JSON.stringify({ origin: location.origin, target: settings.target, days: settings.days, uses: settings.uses });
  return 'javascript:(' + mailkeepBookmarklet.toString() + ')(' + cfg + ');void 0';
}

document.addEventListener('DOMContentLoaded', function () {
  var form = document.getElementById('create');
  var target = document.getElementById('target'), days = document.getElementById('days'), uses = document.getElementById('uses');
  var result = document.getElementById('result'), errorBox = document.getElementById('error');
  var submit = document.getElementById('submit'), link = document.getElementById('bookmarklet');

  function settings() {
    return {
      target: target.value.trim(),
      days: days.value === '' ? null : Number(days.value),
      uses: uses.value === '' ? null : Number(uses.value)
    };
  }
  function updateBookmarklet() {
    var s = settings();
    link.href = bookmarkletHref(s);
    link.textContent = s.target ? 'mailkeep alias → ' + s.target : 'mailkeep alias';
    try { localStorage.setItem('mailkeep.settings', JSON.stringify(s)); } catch (e) { /* private mode */ }
  }
  try {
    var saved = JSON.parse(localStorage.getItem('mailkeep.settings') || 'null');
    if (saved) {
      target.value = saved.target || '';
      if (saved.days) days.value = saved.days;
      uses.value = saved.uses || '';
    }
  } catch (e) { /* ignore */ }
  [target, days, uses].forEach(function (el) { el.addEventListener('input', updateBookmarklet); });
  updateBookmarklet();

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    errorBox.hidden = true;
    if (!target.checkValidity() || !target.value) { showError('Please enter a valid e-mail address.'); target.focus(); return; }
    submit.disabled = true;
    var s = settings();
    fetch('/api/v1/aliases', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ target: s.target, days: s.days, max_usage: s.uses })
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body, retry: r.headers.get('Retry-After') }; });
    }).then(function (res) {
      if (!res.ok) {
        var text = res.body.description || res.body.error;
        if (res.body.error === 'rate-limited' && res.retry) text = 'You just created an alias. Try again in ' + res.retry + ' s.';
        showError(text);
        return;
      }
      var a = res.body;
      document.getElementById('alias').textContent = a.alias;
      document.getElementById('aid').textContent = a.aid;
      document.getElementById('token').textContent = a.manage_token;
      document.getElementById('details').textContent = 'Forwards to ' + a.target + ' until ' +
        new Date(a.valid_until).toLocaleString() + (a.max_usage ? ', for at most ' + a.max_usage + ' messages.' : '.');
      result.hidden = false;
      document.getElementById('copy').focus();
    }).catch(function (err) {
      showError('The server could not be reached: ' + err.message);
    }).finally(function () { submit.disabled = false; });
  });

  document.getElementById('copy').addEventListener('click', function () {
    var text = document.getElementById('alias').textContent, button = this;
    function done() { button.textContent = 'Copied'; setTimeout(function () { button.textContent = 'Copy'; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else { fallbackCopy(text); done(); }
  });
  function fallbackCopy(text) {
    var t = document.createElement('textarea');
    t.value = text; document.body.appendChild(t); t.select();
    try { document.execCommand('copy'); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(t);
  }
});
