// The controller's live view: people inside now, and each entry and exit as it happens (scans,
// and exits the server inferred), from the venue's event feed read with fetch().
(function () {
  'use strict';
  var C = window.Checkin;
  var M = C.M;
  var venue = C.main.getAttribute('data-venue');
  var base = '/v1/venues/' + encodeURIComponent(venue);
  var status = document.getElementById('status');
  var live = document.getElementById('live');
  var present = document.getElementById('present');
  var feed = document.getElementById('feed');
  var state = document.getElementById('feed-state');
  var seen = {};
  var refreshTimer = null;
  var downSince = null;

  function refresh() {
    if (refreshTimer) { return; }
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      C.api(base + '/occupancy').then(function (r) { if (r.status === 200) { present.textContent = String(r.body.present); } });
    }, 100);
  }

  function add(ts, person, isIn, how, inferred) {
    var row = C.el('tr', { class: 'fresh' }, [
      C.el('td', { text: C.time(ts) }),
      C.el('td', { text: person }),
      C.el('td', { text: isIn ? M.venue_in : M.venue_out }),
      C.el('td', { class: inferred ? 'how-inferred' : '', text: how })
    ]);
    feed.insertBefore(row, feed.firstChild);
    setTimeout(function () { row.className = ''; }, 3000);
    while (feed.rows.length > 200) { feed.deleteRow(feed.rows.length - 1); }
  }

  // A reconnection: the feed resumes from the last scan it saw (Last-Event-ID), so the scans
  // made meanwhile arrive again and show above this row; inferred exits are not replayed
  // (docs/api.md), so the row says so, and the count inside is read again.
  function gap(from, to) {
    var row = C.el('tr', { class: 'gap' }, [
      C.el('td', { text: C.time(from) + '–' + C.time(to) }),
      C.el('td', { colspan: '3', text: M.venue_gap })
    ]);
    feed.insertBefore(row, feed.firstChild);
  }

  function start() {
    status.textContent = M.loading;
    C.api(base).then(function (r) {
      if (r.status === 401 || r.status === 403) { status.textContent = r.status === 403 ? M.token_forbidden : M.token_rejected; return; }
      if (r.status === 404) { status.textContent = M.venue_not_found; return; }
      if (r.status !== 200) { status.textContent = M.error_generic; return; }
      document.getElementById('venue-name').textContent = r.body.name || venue;
      present.textContent = String(r.body.present);
      status.textContent = '';
      live.hidden = false;
      C.stream(base + '/events?last=20', function (kind, ev) {
        if (kind === 'exit') {
          add(ev.ts, ev.person, false, ev.reason === 'elsewhere' ? M.venue_inferred_elsewhere : M.venue_inferred_deadline, true);
        } else {
          if (seen[ev.seq]) { return; }
          seen[ev.seq] = true;
          add(ev.ts, ev.person, ev.action !== 'out', M.venue_scanned, false);
        }
        refresh();
      }, function (s) {
        state.textContent = s === 'live' ? M.venue_feed_live : M.venue_feed_reconnecting;
        state.className = 'pill ' + (s === 'live' ? 'live' : 'down');
        var now = Math.floor(Date.now() / 1000);
        if (s === 'down' && downSince === null) { downSince = now; }
        if (s === 'live') {
          if (downSince !== null) { gap(downSince, now); downSince = null; }
          refresh();
        }
      });
    });
  }
  C.requireToken(start);
}());
