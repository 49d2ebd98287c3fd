// The portal's one enhancement: the exposure-site filter narrows the table as you type (the
// form still works without JavaScript, filtering on the server).
(function () {
  'use strict';
  var input = document.getElementById('sites-q');
  var table = document.getElementById('sites');
  var count = document.getElementById('sites-n');
  if (!input || !table) { return; }
  input.addEventListener('input', function () {
    var q = input.value.trim().toLowerCase();
    var n = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var show = !q || (row.getAttribute('data-search') || '').indexOf(q) >= 0;
      row.hidden = !show;
      if (show) { n += 1; }
    });
    count.textContent = String(n);
  });
}());
