/* The writing page's lease: a countdown, kept alive while the labeler is active.
 *
 * The ranking page does the same inside label.js. Writing an answer is the longest task, so
 * without this a careful labeler outlived the lease unwarned and lost the slot. While the
 * labeler is active (keys, pointer, typing, scrolling, coming back to the tab), the lease is
 * renewed in its last minute and also once it ran out, while nobody took the slot; a
 * refusal says why. Text is written with textContent only.
 */
(function () {
  "use strict";

  var node = document.getElementById("lease");
  var left = document.getElementById("lease-left");
  var suffix = document.getElementById("lease-suffix");
  if (!node || !left || !node.getAttribute("data-renew-url")) return;

  var renewUrl = node.getAttribute("data-renew-url");
  var expiresAt = Date.parse(node.getAttribute("data-expires-at"));
  var clockOffset = Date.parse(node.getAttribute("data-server-now")) - Date.now();
  var lastActivity = 0;
  var lastRenewal = 0;
  var renewing = false;
  var refused = false;

  function csrfToken() {
    var input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }

  function say(message) {
    var alert = document.getElementById("alert");
    if (!alert) return;
    var p = document.createElement("p");
    p.textContent = message;
    alert.replaceChildren(p);
    alert.hidden = false;
  }

  function renew() {
    if (renewing || refused || lastActivity <= lastRenewal) return;
    renewing = true;
    lastRenewal = Date.now();
    fetch(renewUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: "{}",
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var data = {};
          try { data = text ? JSON.parse(text) : {}; } catch (e) { data = {}; }
          if (response.status === 200 && data.expires_at) {
            expiresAt = Date.parse(data.expires_at);
            var date = Date.parse(response.headers.get("Date") || "");
            if (!isNaN(date)) clockOffset = date - Date.now();
            tick();
          } else if (response.status === 409) {
            refused = true;
            say("Your lease could not be renewed: " + (data.detail || "it is closed."));
          }
        });
      })
      .catch(function () { /* the countdown keeps showing the truth */ })
      .then(function () { renewing = false; });
  }

  function tick() {
    var seconds = Math.max(0, Math.round((expiresAt - (Date.now() + clockOffset)) / 1000));
    var rest = seconds % 60;
    left.textContent = seconds > 0 ? Math.floor(seconds / 60) + ":" + (rest < 10 ? "0" : "") + rest : "expired";
    if (suffix) suffix.hidden = seconds === 0;
    node.classList.toggle("is-low", seconds < 60);
    if (seconds <= 60) renew();
  }

  ["keydown", "pointerdown", "input", "scroll", "wheel", "touchstart"].forEach(function (type) {
    document.addEventListener(type, function () { lastActivity = Date.now(); }, { capture: true, passive: true });
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") lastActivity = Date.now();
  });
  tick();
  window.setInterval(tick, 1000);
})();
