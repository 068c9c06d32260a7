// DTMA dashboard: progressive enhancement of server-rendered pages.
// Same-origin requests only; nothing is fetched from anywhere else.
(function () {
  'use strict';

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : '';
  var POLL_MS = 2000;

  // Times: the server renders UTC; show them in the viewer's zone and keep
  // UTC in the title (shown on hover).
  function localizeTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d.getTime())) {
        t.textContent = d.toLocaleString();
      }
    });
  }

  var banner = document.getElementById('banner');
  function showBanner(text, link) {
    if (!banner) return;
    banner.textContent = text + ' ';
    if (link) {
      var a = document.createElement('a');
      a.href = link.href;
      a.textContent = link.text;
      banner.appendChild(a);
    }
    banner.hidden = false;
  }
  function hideBanner() { if (banner) banner.hidden = true; }

  var updated = document.getElementById('updated');
  function markUpdated() {
    if (updated) updated.textContent = 'Updated ' + new Date().toLocaleTimeString();
  }

  // changes() is the source of "something may have changed" signals: the
  // agent's instance event stream (/v1/events, served to the page as
  // /ui/api/events), so a change shows at once; and a poll every POLL_MS as
  // the safety net (host metrics change without events; a stream being
  // re-established misses nothing).
  function changes(onChange) {
    var timer = setInterval(onChange, POLL_MS);
    var es = null;
    if (window.EventSource) {
      es = new EventSource('/ui/api/events');
      es.addEventListener('instance', function () { onChange(); });
      es.addEventListener('resync', function () { onChange(); });
    }
    return function stop() {
      clearInterval(timer);
      if (es) es.close();
    };
  }

  // A live region: an element whose data-live URL serves its inner HTML
  // (rendered by the same template as the page). It is replaced only when
  // it changed, and the focused element is focused again afterwards.
  function live(el) {
    var url = el.getAttribute('data-live');
    var last = el.innerHTML;
    var busy = false;
    var stop = function () {};
    function refresh() {
      if (busy) return Promise.resolve();
      busy = true;
      return fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
        .then(function (r) {
          if (r.status === 401) {
            stop();
            showBanner('Your session has ended.', { href: '/ui/login', text: 'Log in again' });
            return;
          }
          if (r.status === 404 && el.hasAttribute('data-gone')) {
            stop();
            showBanner(el.getAttribute('data-gone'), { href: '/ui/', text: 'Back to the instances' });
            return;
          }
          if (!r.ok) {
            return r.json().catch(function () { return null; }).then(function (b) {
              throw new Error(b && b.error ? b.error.message : 'HTTP ' + r.status);
            });
          }
          return r.text().then(function (html) {
            if (html !== last) {
              var focusKey = document.activeElement && document.activeElement.getAttribute('data-key');
              el.innerHTML = html;
              last = el.innerHTML;
              localizeTimes(el);
              if (focusKey) {
                var f = el.querySelector('[data-key="' + CSS.escape(focusKey) + '"]');
                if (f) f.focus();
              }
            }
            hideBanner();
            markUpdated();
          });
        })
        .catch(function (e) {
          if (e instanceof TypeError) {
            showBanner('Cannot reach the agent (' + e.message + '); retrying every 2 s. Is dtma serve running and reachable from here?');
          } else {
            showBanner('The agent could not answer (' + e.message + '); retrying every 2 s. The host page shows Docker and registry reachability.',
              { href: '/ui/host', text: 'Host page' });
          }
        })
        .finally(function () { busy = false; });
    }
    stop = changes(refresh);
    return refresh;
  }

  var refreshLive = function () { return Promise.resolve(); };
  var liveEl = document.getElementById('live');
  if (liveEl) {
    refreshLive = live(liveEl);
    markUpdated();
  }

  // Actions (instance page): POST with the CSRF header; the result is
  // shown inline. Remove asks for confirmation first.
  var actions = document.querySelector('.actions[data-action-url]');
  var result = document.getElementById('action-result');
  function setResult(text, cls) {
    if (!result) return;
    result.textContent = text;
    result.className = 'result' + (cls ? ' ' + cls : '');
  }
  // One action at a time: a second click (or a stray event) while one is
  // in flight sends nothing, so a remove is never posted twice.
  var inFlight = false;
  function act(action) {
    if (inFlight) return Promise.resolve();
    inFlight = true;
    var base = actions.getAttribute('data-action-url');
    var buttons = actions.querySelectorAll('button');
    buttons.forEach(function (b) { b.disabled = true; });
    setResult(action.charAt(0).toUpperCase() + action.slice(1) + ': working…', '');
    return fetch(base + '/' + action, {
      method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf, 'Accept': 'application/json' }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (!r.ok) {
          setResult('✖ ' + action + ' failed: ' + (b.error ? b.error.message : 'HTTP ' + r.status), 'bad');
          return;
        }
        setResult('✔ ' + b.message, 'ok');
        if (action === 'remove') {
          window.location.assign('/ui/?removed=' + encodeURIComponent(actions.getAttribute('data-name')));
          return;
        }
        return refreshLive();
      });
    }).catch(function (e) {
      setResult('✖ ' + action + ' failed: ' + e.message, 'bad');
    }).finally(function () {
      inFlight = false;
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }
  if (actions) {
    var dialog = document.getElementById('confirm-remove');
    actions.querySelectorAll('button[data-action]').forEach(function (b) {
      b.addEventListener('click', function () {
        var action = b.getAttribute('data-action');
        if (action === 'remove' && dialog) {
          dialog.returnValue = '';
          dialog.showModal();
          return;
        }
        act(action);
      });
    });
    // The dialog's own Remove button acts on its click (its form then
    // closes the dialog). Not on the dialog's close event: that event is
    // queued, and one left from a Cancel can fire after a later Remove
    // has set returnValue, which would post the remove twice.
    var yes = document.getElementById('confirm-remove-yes');
    if (yes) {
      yes.addEventListener('click', function () { act('remove'); });
    }
  }

  // Logs: tail, or follow streamed through fetch + ReadableStream.
  var logsForm = document.getElementById('logs-form');
  if (logsForm) {
    var pre = document.getElementById('logs');
    var followBtn = document.getElementById('follow');
    var logsStatus = document.getElementById('logs-status');
    var tail = document.getElementById('tail');
    var ctrl = null;
    var MAX_CHARS = 500000;
    var stopStream = function () {
      if (ctrl) { ctrl.abort(); ctrl = null; }
      followBtn.setAttribute('aria-pressed', 'false');
    };
    var append = function (text) {
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += text;
      if (pre.textContent.length > MAX_CHARS) pre.textContent = pre.textContent.slice(-MAX_CHARS);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    };
    var load = function (follow) {
      stopStream();
      var n = tail.value === '' ? '100' : tail.value;
      var url = logsForm.getAttribute('data-logs-url') + '?tail=' + encodeURIComponent(n) + (follow ? '&follow=true' : '');
      var c = new AbortController();
      ctrl = c;
      if (follow) followBtn.setAttribute('aria-pressed', 'true');
      pre.textContent = '';
      logsStatus.textContent = 'Loading…';
      fetch(url, { credentials: 'same-origin', signal: c.signal }).then(function (r) {
        if (!r.ok) {
          return r.json().catch(function () { return null; }).then(function (b) {
            throw new Error(b && b.error ? b.error.message : 'HTTP ' + r.status);
          });
        }
        logsStatus.textContent = follow ? 'Following (new lines appear as they are written)…' : '';
        var reader = r.body.getReader();
        var dec = new TextDecoder();
        var pump = function () {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              append(dec.decode());
              logsStatus.textContent = follow ? 'The stream ended (the container stopped?).' : 'Showing the last ' + n + ' lines.';
              if (ctrl === c) stopStream();
              return;
            }
            append(dec.decode(chunk.value, { stream: true }));
            return pump();
          });
        };
        return pump();
      }).catch(function (e) {
        if (e.name === 'AbortError') return;
        logsStatus.textContent = 'Logs failed: ' + e.message;
        if (ctrl === c) stopStream();
      });
    };
    logsForm.addEventListener('submit', function (ev) { ev.preventDefault(); load(false); });
    followBtn.addEventListener('click', function () {
      if (followBtn.getAttribute('aria-pressed') === 'true') {
        stopStream();
        logsStatus.textContent = 'Stopped following.';
      } else {
        load(true);
      }
    });
    document.getElementById('logs-clear').addEventListener('click', function () { pre.textContent = ''; });
  }

  localizeTimes(document);
})();
