// Live refresh, as a progressive extra: the page is complete without it. Every
// data-refresh-ms it fetches the element's data-live fragment (same origin, same cookie)
// and swaps it in; a failed fetch leaves the last figures and says so.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box || !window.fetch) { return; }
  var every = parseInt(box.getAttribute("data-refresh-ms"), 10) || 5000;
  function refresh() {
    fetch(box.getAttribute("data-live"), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        box.setAttribute("data-refreshed", String(Date.now()));
        box.classList.remove("stale");
      })
      .catch(function () { box.classList.add("stale"); })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
