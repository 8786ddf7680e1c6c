// Keeps the page's live part current: the scheduler's event stream says that something
// changed, and the page fetches its own part again, rendered (and escaped) by the server.
"use strict";
(function () {
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live || !window.EventSource) {
    return;
  }
  var pending = null;
  function refresh() {
    pending = null;
    fetch(live.dataset.fragment, { credentials: "same-origin" })
      .then(function (reply) {
        return reply.ok ? reply.text() : Promise.reject(reply.status);
      })
      .then(function (html) {
        live.innerHTML = html;
      })
      .catch(function () {
        status.textContent = "not updating";
      });
  }
  function soon() {
    if (pending === null) {
      pending = setTimeout(refresh, 250);
    }
  }
  var source = new EventSource("/events");
  source.onopen = function () {
    status.textContent = "live";
  };
  source.onerror = function () {
    status.textContent = "reconnecting";
  };
  ["request", "worker", "reset"].forEach(function (kind) {
    source.addEventListener(kind, soon);
  });
  if (live.dataset.every) {
    // Utilisation samples come on a timer, not with events.
    setInterval(refresh, Math.max(Number(live.dataset.every), 1) * 1000);
  }
})();
