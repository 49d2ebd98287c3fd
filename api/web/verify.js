// The certificate check: POST /v1/verify with the pasted text, then what it says.
(function () {
  'use strict';
  var C = window.Checkin;
  var M = C.M;
  var out = document.getElementById('verdict');
  var form = document.getElementById('verify-form');
  if (!form) { return; }
  function day(s) { if (!s) { return '–'; } var p = String(s).slice(0, 10).split('-'); return p.length === 3 ? p[2] + '/' + p[1] + '/' + p[0] : String(s); }
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var hc1 = document.getElementById('hc1').value.trim();
    out.textContent = M.loading;
    C.api('/v1/verify', { method: 'POST', body: { hc1: hc1 } }).then(function (r) {
      out.textContent = '';
      if (r.status === 404 || r.status === 405) { out.appendChild(C.el('p', { class: 'error', text: M.unavailable })); return; }
      if (r.status !== 200 || !r.body) { out.appendChild(C.el('p', { class: 'error', text: M.error_generic })); return; }
      var b = r.body;
      var card = C.el('div', { class: 'card verdict' + (b.valid ? '' : ' bad') });
      card.appendChild(C.el('h2', { class: b.valid ? 'ok' : 'error', text: b.valid ? M.verify_valid : M.verify_invalid }));
      if (!b.valid) {
        card.appendChild(C.el('p', { text: M['reason_' + b.reason] || b.reason }));
        out.appendChild(card);
        return;
      }
      var claims = b.claims || {};
      var dl = C.el('dl');
      function row(k, v) { dl.appendChild(C.el('dt', { text: k })); dl.appendChild(C.el('dd', { text: v })); }
      row(M.verify_person, claims.pid || '–');
      var pass = claims.pass;
      row(M.verify_pass, pass === 'green' ? M.pass_green : pass === 'yellow' ? M.pass_yellow : pass === 'red' ? M.pass_red : (pass || '–'));
      row(M.verify_issuer, b.issuer || '–');
      row(M.verify_issued, C.dateTime(b.issued));
      row(M.verify_expires, C.dateTime(b.expires));
      (claims.v || []).forEach(function (v) { row(M.verify_vaccinations, M.col_dose + ' ' + v.dn + ': ' + v.mp + ', ' + day(v.dt)); });
      (claims.t || []).forEach(function (t) { row(M.verify_tests, (t.tr === '260373001' ? M.verify_positive : M.verify_negative) + ', ' + day(t.sc)); });
      (claims.r || []).forEach(function (x) { row(M.verify_recoveries, day(x.fr) + ' – ' + M.verify_recovered_until + ' ' + day(x.du)); });
      card.appendChild(dl);
      out.appendChild(card);
    });
  });
}());
