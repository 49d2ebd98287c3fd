// The poster: printing, and (with a tokens file) the venue's name and QR code fetched with the
// owner's token.
(function () {
  'use strict';
  var C = window.Checkin;
  var M = C.M;
  var venue = C.main.getAttribute('data-venue');
  var status = document.getElementById('status');
  document.getElementById('print').addEventListener('click', function () { window.print(); });
  if (C.OPEN) { return; }
  C.requireToken(function () {
    C.api('/v1/venues/' + encodeURIComponent(venue)).then(function (r) {
      if (r.status === 404) {
        status.textContent = M.venue_not_found;
        document.getElementById('poster').hidden = true;
        document.getElementById('print').hidden = true;
        return;
      }
      if (r.status !== 200) { status.textContent = r.status === 403 ? M.token_forbidden : M.error_generic; return; }
      document.getElementById('venue-name').textContent = r.body.name;
      var h = {};
      try { h.Authorization = 'Bearer ' + sessionStorage.getItem('checkin-token'); } catch (e) { /* none */ }
      return fetch('/venue/' + encodeURIComponent(venue) + '/poster.svg', { headers: h, credentials: 'omit' }).then(function (q) {
        if (!q.ok) { status.textContent = M.token_forbidden; return null; }
        return q.blob();
      }).then(function (blob) {
        if (!blob) { return; }
        var img = C.el('img', { src: URL.createObjectURL(blob), alt: M.poster_qr_alt });
        document.getElementById('qr').appendChild(img);
      });
    });
  });
}());
