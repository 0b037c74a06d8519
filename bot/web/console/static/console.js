// Ooda console: live refresh of the parts of a page marked data-live-src. Pages read fine without
// it; with it, the inbox and an open task's timeline follow the server every few seconds.
"use strict";

(function () {
  function stamp(text) {
    var status = document.getElementById("live-status");
    if (status) { status.textContent = text; }
  }

  function follow(region) {
    var source = region.getAttribute("data-live-src");
    var every = Math.max(1, parseFloat(region.getAttribute("data-live-every") || "5")) * 1000;
    var timer = null;

    function refresh() {
      fetch(source, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            stamp("Signed out: reload the page to sign in again.");
            return null;
          }
          if (!response.ok) {
            stamp("Could not refresh (" + response.status + "); trying again.");
            schedule();
            return null;
          }
          return response.text();
        })
        .then(function (html) {
          if (html === null || html === undefined) { return; }
          // The server rendered and escaped this; parsing it runs no script (and the CSP allows none inline).
          var parsed = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html").body.firstChild;
          region.replaceChildren.apply(region, Array.prototype.slice.call(parsed.childNodes));
          if (region.querySelector("[data-live-end]")) {
            // The task has ended: nothing more will change, so stop asking.
            stamp("Final: updated " + new Date().toLocaleTimeString());
            return;
          }
          stamp("Live: updated " + new Date().toLocaleTimeString());
          schedule();
        })
        .catch(function () {
          stamp("Offline: trying again.");
          schedule();
        });
    }

    function schedule() {
      if (timer !== null) { clearTimeout(timer); }
      timer = setTimeout(function () {
        if (document.hidden) { schedule(); } else { refresh(); }
      }, every);
    }

    stamp("Live");
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-src]"), follow);
  });
})();
