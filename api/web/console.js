// The epidemiologist console: cases (register, recover, discard), a case's contacts (lists and
// a graph) and the places it visited, a person's record, follow-ups, and tier changes live.
(function () {
  'use strict';
  var C = window.Checkin;
  var M = C.M;
  var el = C.el;
  var status = document.getElementById('status');
  var SVG = 'http://www.w3.org/2000/svg';

  function missing(r) { return r.status === 404 && r.body && String(r.body.detail || '').indexOf('no route') === 0; }
  function denied(r) { return r.status === 401 || r.status === 403; }
  function statusText(s) { return M['status_' + s] || s; }
  function mins(s) { return String(Math.round(s / 60)); }

  function loadCases() {
    return C.api('/v1/cases').then(function (r) {
      if (denied(r)) { status.textContent = r.status === 403 ? M.token_forbidden : M.token_rejected; document.getElementById('console').hidden = true; return; }
      if (r.status !== 200) { status.textContent = M.error_generic; return; }
      status.textContent = '';
      document.getElementById('console').hidden = false;
      var tbody = document.querySelector('#cases tbody');
      tbody.textContent = '';
      if (!r.body.cases.length) { tbody.appendChild(el('tr', {}, [el('td', { colspan: '7', class: 'muted', text: M.cases_none })])); }
      r.body.cases.slice().reverse().forEach(function (c) {
        var actions = el('td');
        var view = el('button', { type: 'button', class: 'small', text: M.case_view, 'aria-label': M.case_view + ' ' + c.id });
        view.addEventListener('click', function () { showContacts(c.id); });
        actions.appendChild(view);
        if (c.status === 'active') {
          var rec = el('button', { type: 'button', class: 'small secondary', text: M.case_recover, 'aria-label': M.case_recover + ' ' + c.id });
          rec.addEventListener('click', function () { patch(c.id, 'recovered'); });
          actions.appendChild(rec);
        }
        if (c.status !== 'discarded') {
          var dis = el('button', { type: 'button', class: 'small secondary', text: M.case_discard, 'aria-label': M.case_discard + ' ' + c.id });
          dis.addEventListener('click', function () { patch(c.id, 'discarded'); });
          actions.appendChild(dis);
        }
        tbody.appendChild(el('tr', {}, [
          el('th', { scope: 'row', text: c.id }), el('td', { text: c.person }), el('td', { text: statusText(c.status) }),
          el('td', { text: C.dateTime(c.sampled_at) }), el('td', { class: 'num', text: String(c.f1) }), el('td', { class: 'num', text: String(c.f2) }), actions
        ]));
      });
    });
  }

  function patch(id, to) {
    C.api('/v1/cases/' + encodeURIComponent(id), { method: 'PATCH', body: { status: to } }).then(function () { loadCases(); });
  }

  function graph(trace) {
    var W = 520, H = 420, cx = W / 2, cy = H / 2;
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-labelledby', 'graph-cap');
    var f1 = trace.f1.slice(0, 40), f2 = trace.f2.slice(0, 80);
    var pos = {};
    f1.forEach(function (p, i) { var a = 2 * Math.PI * i / Math.max(f1.length, 1) - Math.PI / 2; pos[p.person] = [cx + 110 * Math.cos(a), cy + 110 * Math.sin(a), a]; });
    var perVia = {};
    function node(x, y, r, cls, label) {
      var g = document.createElementNS(SVG, 'g');
      var c = document.createElementNS(SVG, 'circle');
      c.setAttribute('cx', x.toFixed(1)); c.setAttribute('cy', y.toFixed(1)); c.setAttribute('r', r); c.setAttribute('class', cls);
      var t = document.createElementNS(SVG, 'title'); t.textContent = label;
      c.appendChild(t); g.appendChild(c);
      var tx = document.createElementNS(SVG, 'text');
      tx.setAttribute('x', (x + r + 2).toFixed(1)); tx.setAttribute('y', (y + 4).toFixed(1)); tx.setAttribute('class', 'g-label');
      tx.textContent = label.length > 12 ? label.slice(0, 11) + '…' : label;
      g.appendChild(tx);
      return g;
    }
    function edge(a, b) {
      var l = document.createElementNS(SVG, 'line');
      l.setAttribute('x1', a[0].toFixed(1)); l.setAttribute('y1', a[1].toFixed(1)); l.setAttribute('x2', b[0].toFixed(1)); l.setAttribute('y2', b[1].toFixed(1));
      l.setAttribute('class', 'g-edge');
      svg.appendChild(l);
    }
    var nodes = [];
    f1.forEach(function (p) { edge([cx, cy], pos[p.person]); nodes.push(node(pos[p.person][0], pos[p.person][1], 8, 'g-f1', 'F1 ' + p.person)); });
    f2.forEach(function (p) {
      var v = pos[p.via];
      var base = v ? v[2] : 0;
      var k = perVia[p.via] = (perVia[p.via] || 0) + 1;
      var a = base + (k % 2 ? 1 : -1) * Math.ceil(k / 2) * 0.18;
      var at = [cx + 185 * Math.cos(a), cy + 185 * Math.sin(a)];
      if (v) { edge(v, at); }
      nodes.push(node(at[0], at[1], 6, 'g-f2', 'F2 ' + p.person));
    });
    nodes.forEach(function (n) { svg.appendChild(n); });
    svg.appendChild(node(cx, cy, 12, 'g-f0', 'F0 ' + trace['case']));
    return svg;
  }

  function showContacts(id) {
    C.api('/v1/cases/' + encodeURIComponent(id) + '/contacts').then(function (r) {
      if (r.status !== 200) { return; }
      var t = r.body;
      var box = document.getElementById('contacts');
      box.hidden = false;
      document.getElementById('contacts-case').textContent = id + ' (' + t['case'] + ')';
      var g = document.getElementById('graph');
      g.textContent = '';
      g.appendChild(graph(t));
      function put(where, node) { var e = document.getElementById(where); e.textContent = ''; e.appendChild(node); }
      put('contacts-visits', C.table([M.col_venue, M.col_start, M.col_end], t.visits.map(function (v) { return [v.venue, C.dateTime(v.start), C.dateTime(v.end)]; })));
      put('contacts-f1', C.table([M.case_person, M.contacts_exposure, M.contacts_first, M.contacts_last, M.contacts_venues], t.f1.map(function (p) { return [p.person, mins(p.exposure_s), C.dateTime(p.first_contact), C.dateTime(p.last_contact), p.venues.join(', ')]; }), [1]));
      put('contacts-f2', C.table([M.case_person, M.contacts_via, M.contacts_exposure, M.contacts_first, M.contacts_last], t.f2.map(function (p) { return [p.person, p.via, mins(p.exposure_s), C.dateTime(p.first_contact), C.dateTime(p.last_contact)]; }), [2]));
      box.scrollIntoView();
    });
  }

  function register(ev) {
    ev.preventDefault();
    var msg = document.getElementById('case-msg');
    var body = { person: document.getElementById('case-person').value.trim(), sampled_at: C.parseLocal(document.getElementById('case-sampled').value) };
    var onset = C.parseLocal(document.getElementById('case-onset').value);
    if (onset !== null) { body.onset = onset; }
    var area = document.getElementById('case-area').value.trim();
    if (area) { body.area = area; }
    var note = document.getElementById('case-note').value.trim();
    if (note) { body.note = note; }
    C.api('/v1/cases', { method: 'POST', body: body }).then(function (r) {
      if (r.status === 200 || r.status === 201) {
        msg.className = 'ok';
        msg.textContent = M.case_registered + ' ' + r.body.id;
        loadCases().then(function () { showContacts(r.body.id); });
      } else {
        msg.className = 'error';
        msg.textContent = (r.body && (r.body.detail || r.body.title)) || M.error_generic;
      }
    });
  }

  function lookup(ev) {
    ev.preventDefault();
    var p = document.getElementById('lookup-person').value.trim();
    var out = document.getElementById('lookup-out');
    out.textContent = M.loading;
    var enc = encodeURIComponent(p);
    var parts = [
      ['status', '/v1/persons/' + enc + '/status'], ['pass', '/v1/persons/' + enc + '/pass'],
      ['results', '/v1/persons/' + enc + '/results'], ['doses', '/v1/persons/' + enc + '/vaccinations'],
      ['visits', '/v1/persons/' + enc + '/visits']
    ];
    Promise.all(parts.map(function (x) { return C.api(x[1]); })).then(function (rs) {
      out.textContent = '';
      function section(title, r, render) {
        out.appendChild(el('h3', { text: title }));
        if (missing(r)) { out.appendChild(el('p', { class: 'muted', text: M.unavailable })); return; }
        if (denied(r)) { out.appendChild(el('p', { class: 'muted', text: M.token_forbidden })); return; }
        if (r.status === 404) { out.appendChild(el('p', { class: 'muted', text: M.contacts_none })); return; }
        if (r.status !== 200) { out.appendChild(el('p', { class: 'error', text: M.error_generic })); return; }
        out.appendChild(render(r.body));
      }
      section(M.lookup_tier, rs[0], function (b) {
        var txt = b.tier === 'none' ? M.tier_none : b.tier;
        if (b.until) { txt += ' (' + M.contacts_last + ' ' + C.dateTime(b.until) + ')'; }
        return el('p', { class: b.tier === 'none' ? '' : 'error', text: txt });
      });
      section(M.lookup_pass, rs[1], function (b) { return el('p', { id: 'lookup-pass', text: (M['pass_' + b.color] || b.color) + ' — ' + (M['basis_' + b.basis] || b.basis) }); });
      section(M.lookup_results, rs[2], function (b) { return C.table([M.col_sample, M.col_kind, M.col_collected, M.col_result], b.results.map(function (x) { return [x.sample, x.kind, C.dateTime(x.collected_at), x.result]; })); });
      section(M.lookup_doses, rs[3], function (b) { return C.table([M.col_dose, M.col_vaccine, M.col_date], b.doses.map(function (d) { return [String(d.dose), d.vaccine, C.date(d.administered_at)]; })); });
      section(M.lookup_visits, rs[4], function (b) { return C.table([M.col_venue, M.col_start, M.col_end], b.visits.map(function (v) { return [v.venue, C.dateTime(v.start), C.dateTime(v.end)]; })); });
    });
  }

  function loadFollowups() {
    C.api('/v1/followups').then(function (r) {
      var box = document.getElementById('followups');
      box.textContent = '';
      if (missing(r)) { box.appendChild(el('p', { class: 'muted', text: M.unavailable })); return; }
      if (r.status !== 200) { box.appendChild(el('p', { class: 'muted', text: M.error_generic })); return; }
      box.appendChild(C.table([M.case_person, M.lookup_tier, M.col_symptoms, M.col_last_declared], r.body.persons.map(function (p) { return [p.person, p.tier, p.symptoms.join(', '), C.dateTime(p.last_declared)]; })));
    });
  }

  function tiers() {
    var list = document.getElementById('tiers');
    var state = document.getElementById('tiers-state');
    var first = true;
    C.stream('/v1/tiers/events', function (kind, ev) {
      if (first) { list.textContent = ''; first = false; }
      list.insertBefore(el('li', { text: C.time(Math.floor(Date.now() / 1000)) + ' · ' + ev.person + ' → ' + (ev.tier === 'none' ? M.tier_none : ev.tier) }), list.firstChild);
      while (list.children.length > 50) { list.removeChild(list.lastChild); }
    }, function (s) {
      state.textContent = s === 'live' ? M.venue_feed_live : M.venue_feed_reconnecting;
      state.className = 'pill ' + (s === 'live' ? 'live' : 'down');
    });
  }

  var started = false;
  function start() {
    status.textContent = M.loading;
    loadCases().then(function () {
      if (started || document.getElementById('console').hidden) { return; }
      started = true;
      loadFollowups();
      tiers();
    });
  }
  document.getElementById('case-form').addEventListener('submit', register);
  document.getElementById('lookup-form').addEventListener('submit', lookup);
  document.getElementById('cases-refresh').addEventListener('click', function () { loadCases(); });
  var sampled = document.getElementById('case-sampled');
  if (!sampled.value) { sampled.value = C.toLocalInput(Math.floor(Date.now() / 1000) - 3600); }
  C.requireToken(start);
}());
