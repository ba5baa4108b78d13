// The zoo explorer: rows from zoo.json (tools/zoo_page.py), filtered by ?q= and the search box,
// sorted by a click on a column's header. Rows that do not match carry the hidden attribute.
(function () {
  "use strict";
  var box = document.getElementById("zoo-q");
  var count = document.getElementById("zoo-count");
  var table = document.getElementById("zoo");
  var body = table.tBodies[0];
  var rows = [];
  var sortColumn = -1, ascending = true;

  function sortValue(cell) {
    return Array.isArray(cell) ? (cell[1] === null ? -Infinity : cell[1]) : cell;
  }

  function filter() {
    var q = box.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (r) {
      var match = q === "" || r.model.indexOf(q) !== -1;
      r.tr.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " rows";
    var url = new URL(window.location.href);
    if (q) { url.searchParams.set("q", box.value.trim()); } else { url.searchParams.delete("q"); }
    window.history.replaceState(null, "", url.toString());
  }

  function sortBy(column) {
    ascending = column === sortColumn ? !ascending : true;
    sortColumn = column;
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[column]), y = sortValue(b.cells[column]);
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r.tr); });
    body.appendChild(frag);
  }

  function build(data) {
    var head = document.createElement("tr");
    data.columns.forEach(function (name, i) {
      var th = document.createElement("th");
      th.textContent = name;
      th.style.cursor = "pointer";
      th.title = "sort by " + name;
      th.addEventListener("click", function () { sortBy(i); });
      head.appendChild(th);
    });
    table.tHead.appendChild(head);
    var frag = document.createDocumentFragment();
    data.rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (cell) {
        var td = document.createElement("td");
        td.textContent = Array.isArray(cell) ? cell[0] : cell;
        tr.appendChild(td);
      });
      rows.push({tr: tr, cells: cells, model: String(cells[0]).toLowerCase()});
      frag.appendChild(tr);
    });
    body.appendChild(frag);
    box.value = new URLSearchParams(window.location.search).get("q") || "";
    box.addEventListener("input", filter);
    filter();
    table.setAttribute("data-ready", "true");
  }

  // the theme's own search also reads ?q= and opens over the page: keep it closed here
  function closeSiteSearch() {
    var toggle = document.querySelector('input[data-md-toggle="search"]');
    if (toggle) { toggle.checked = false; }
  }
  [0, 300, 1000, 2500].forEach(function (ms) { window.setTimeout(closeSiteSearch, ms); });

  fetch("zoo.json").then(function (r) { return r.json(); }).then(build);
})();
