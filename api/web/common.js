// Shared by every page: the message catalogue, the access token (sessionStorage only, sent as
// a Bearer header, never in a URL), JSON calls, Server-Sent Events read with fetch() streams
// (so the token travels in a header there too), and Vietnam-time formatting.
(function () {
  'use strict';
  var main = document.getElementById('main');
  var M = JSON.parse((main && main.getAttribute('data-msgs')) || '{}');
  var OPEN = main && main.getAttribute('data-open') === 'true';
  var KEY = 'checkin-token';

  function token() { try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; } }
  function setToken(t) { try { if (t) { sessionStorage.setItem(KEY, t); } else { sessionStorage.removeItem(KEY); } } catch (e) { /* private mode */ } }

  function headers(extra) {
    var h = extra || {};
    var t = token();
    if (!OPEN && t) { h.Authorization = 'Bearer ' + t; }
    return h;
  }

  // JSON call: resolves {status, body} (body null when not JSON; status 0 when the network
  // failed, so every caller handles it as an error answer and nothing is left unhandled).
  function api(path, opts) {
    opts = opts || {};
    var h = headers({ Accept: 'application/json' });
    var init = { method: opts.method || 'GET', headers: h, cache: 'no-store', credentials: 'omit' };
    if (opts.body !== undefined) { h['Content-Type'] = 'application/json'; init.body = JSON.stringify(opts.body); }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (r.status === 401 && !OPEN) { authFailed(M.token_rejected); }
        return { status: r.status, body: body };
      });
    }).catch(function () { return { status: 0, body: null }; });
  }

  // Reads an SSE stream with fetch, reconnecting with Last-Event-ID; calls onEvent(kind, data)
  // and onState('live' | 'down').
  function stream(path, onEvent, onState) {
    var lastId = null;
    var delay = 1000;
    var stopped = false;
    function connect() {
      if (stopped) { return; }
      var h = headers({ Accept: 'text/event-stream' });
      if (lastId !== null) { h['Last-Event-ID'] = lastId; }
      fetch(path, { headers: h, cache: 'no-store', credentials: 'omit' }).then(function (r) {
        if (r.status === 401 || r.status === 403) {
          stopped = true;
          authFailed(r.status === 401 ? M.token_rejected : M.token_forbidden);
          return null;
        }
        if (!r.ok || !r.body) { throw new Error('status ' + r.status); }
        onState('live');
        delay = 1000;
        var reader = r.body.getReader();
        var decoder = new TextDecoder();
        var buf = '';
        function pump() {
          return reader.read().then(function (res) {
            if (res.done) { throw new Error('ended'); }
            buf += decoder.decode(res.value, { stream: true });
            var cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              var frame = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              var kind = 'message';
              var data = [];
              frame.split('\n').forEach(function (line) {
                if (line.indexOf('event: ') === 0) { kind = line.slice(7); }
                else if (line.indexOf('data: ') === 0) { data.push(line.slice(6)); }
                else if (line.indexOf('id: ') === 0) { lastId = line.slice(4); }
              });
              if (data.length) {
                var parsed = null;
                try { parsed = JSON.parse(data.join('\n')); } catch (e) { parsed = null; }
                if (parsed) { onEvent(kind, parsed); }
              }
            }
            return pump();
          });
        }
        return pump();
      }).catch(function () {
        if (stopped) { return; }
        onState('down');
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      });
    }
    connect();
    return { stop: function () { stopped = true; } };
  }

  var onAuthFailed = null;
  function authFailed(msg) {
    if (OPEN) { return; }
    setToken('');
    if (onAuthFailed) { onAuthFailed(msg); }
  }

  // Runs start() once a token is known (at once in open mode); asks for one otherwise.
  function requireToken(start) {
    var box = document.getElementById('token-box');
    var form = document.getElementById('token-form');
    var input = document.getElementById('token-input');
    var err = document.getElementById('token-error');
    var out = document.getElementById('signout');
    var status = document.getElementById('status');
    if (OPEN || !box) { start(); return; }
    onAuthFailed = function (msg) {
      box.hidden = false;
      out.hidden = true;
      err.textContent = msg || M.token_rejected;
      err.hidden = false;
      if (status) { status.textContent = ''; }
      input.focus();
    };
    out.addEventListener('click', function () { setToken(''); window.location.reload(); });
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = input.value.trim();
      if (!t) { return; }
      setToken(t);
      input.value = '';
      err.hidden = true;
      box.hidden = true;
      out.hidden = false;
      start();
    });
    if (token()) { out.hidden = false; start(); }
    else { box.hidden = false; if (status) { status.textContent = ''; } }
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function local(ts) { return new Date((ts + 7 * 3600) * 1000); }
  function time(ts) { var d = local(ts); return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()); }
  function date(ts) { var d = local(ts); return pad(d.getUTCDate()) + '/' + pad(d.getUTCMonth() + 1) + '/' + d.getUTCFullYear(); }
  function dateTime(ts) { if (ts === null || ts === undefined) { return '–'; } var d = local(ts); return date(ts) + ' ' + pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()); }
  // <input type="datetime-local"> value (Vietnam time) to unix seconds.
  function parseLocal(v) {
    if (!v) { return null; }
    var ms = Date.parse(v + ':00Z');
    if (isNaN(ms)) { return null; }
    return Math.floor(ms / 1000) - 7 * 3600;
  }
  function toLocalInput(ts) { var d = local(ts); return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + 'T' + pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()); }

  // Builds an element; text is always set as text, never as HTML.
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') { e.textContent = attrs[k]; } else if (k === 'class') { e.className = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
    return e;
  }

  // A table of rows (arrays of strings or nodes) under headers.
  function table(heads, rows, numeric) {
    numeric = numeric || [];
    if (!rows.length) { return el('p', { class: 'muted', text: M.contacts_none }); }
    var thead = el('thead', {}, [el('tr', {}, heads.map(function (h, i) { return el('th', { scope: 'col', class: numeric.indexOf(i) >= 0 ? 'num' : '', text: h }); }))]);
    var tbody = el('tbody', {}, rows.map(function (r) {
      return el('tr', {}, r.map(function (c, i) { return el('td', numeric.indexOf(i) >= 0 ? { class: 'num' } : {}, [typeof c === 'string' ? c : c]); }));
    }));
    return el('div', { class: 'table-wrap' }, [el('table', {}, [thead, tbody])]);
  }

  window.Checkin = { M: M, OPEN: OPEN, api: api, stream: stream, requireToken: requireToken, time: time, date: date, dateTime: dateTime, parseLocal: parseLocal, toLocalInput: toLocalInput, el: el, table: table, main: main };
}());
