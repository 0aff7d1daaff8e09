/* A lease's countdown, kept alive while the labeler is active. Both labeling pages use it.
 *
 * The ranking page (label.js) hands `LeaseClock` each assignment it shows. The writing page's
 * lease is described by data attributes on #lease and starts here on its own: writing an
 * answer is the longest task, and without a countdown a careful labeler outlived the lease
 * unwarned and lost the slot.
 *
 * While the labeler is active (keys, pointer, typing, scrolling, coming back to the tab), the
 * lease is renewed in its last minute, and also once it ran out while nobody took the slot.
 * An abandoned tab is not renewed: it must not hold a comparison forever. A refusal (409)
 * says why and stops renewing. Text is written with textContent only.
 */
(function () {
  "use strict";

  var ACTIVITY = ["keydown", "pointerdown", "input", "scroll", "wheel", "touchstart"];

  function csrfToken() {
    var input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }

  function readJson(response) {
    return response.text().then(function (text) {
      try { return text ? JSON.parse(text) : {}; } catch (e) { return {}; }
    });
  }

  /*
   * options: node, left, suffix (the #lease elements); and, all optional:
   *   busy()            true while a submit or skip is on its way: no renewal then
   *   onLow()           when a minute is left (once each time the lease gets there), so a
   *                     labeler who is reading, not typing, hears that a key keeps it
   *   onExpired()       once per lease, when it runs out
   *   onRefused(detail) the lease was refused renewal for good, and why
   *   onAuth(response)  true when it handled a 401 or 403 (signed out)
   */
  function LeaseClock(options) {
    var self = this;
    this.options = options;
    this.lease = null; // {renewUrl, expiresAt (ms)}
    this.clockOffset = 0; // server time minus client time, in ms
    this.lastActivity = 0;
    this.lastRenewal = 0;
    this.renewing = false;
    ACTIVITY.forEach(function (type) {
      document.addEventListener(type, function () { self.lastActivity = Date.now(); }, { capture: true, passive: true });
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") self.lastActivity = Date.now();
    });
    window.setInterval(function () { self.tick(); }, 1000);
  }

  /*
   * Show and keep alive one assignment's lease, {renewUrl, expiresAt}. `serverNow` is the
   * server's clock when the lease was read (ms), so a skewed client clock counts down the
   * server's time; without it the last known offset stays.
   */
  LeaseClock.prototype.start = function (lease, serverNow) {
    if (serverNow && !isNaN(serverNow)) this.clockOffset = serverNow - Date.now();
    this.lease = lease;
    this.refused = false;
    this.expiredSaid = false;
    this.previousLeft = null;
    this.options.node.hidden = false;
    this.tick();
  };

  LeaseClock.prototype.stop = function () {
    this.lease = null;
    this.options.node.hidden = true;
  };

  LeaseClock.prototype.secondsLeft = function () {
    return Math.max(0, Math.round((this.lease.expiresAt - (Date.now() + this.clockOffset)) / 1000));
  };

  LeaseClock.prototype.tick = function () {
    if (!this.lease) return;
    var o = this.options;
    var left = this.secondsLeft();
    var rest = left % 60;
    o.left.textContent = left > 0 ? Math.floor(left / 60) + ":" + (rest < 10 ? "0" : "") + rest : "expired";
    if (o.suffix) o.suffix.hidden = left === 0;
    o.node.classList.toggle("is-low", left < 60);
    if (left <= 60 && this.previousLeft !== null && this.previousLeft > 60 && o.onLow) o.onLow();
    this.previousLeft = left;
    if (left <= 60) this.renew();
    if (left === 0 && !this.expiredSaid) {
      this.expiredSaid = true;
      if (o.onExpired) o.onExpired();
    }
  };

  LeaseClock.prototype.renew = function () {
    var self = this;
    var o = this.options;
    if (this.renewing || this.refused || (o.busy && o.busy())) return;
    if (this.lastActivity <= this.lastRenewal) return;
    this.renewing = true;
    this.lastRenewal = Date.now();
    var lease = this.lease;
    fetch(lease.renewUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: "{}",
    })
      .then(function (response) {
        if (o.onAuth && o.onAuth(response)) return;
        return readJson(response).then(function (data) {
          if (self.lease !== lease) return; // another assignment is on screen now
          if (response.status === 200 && data.expires_at) {
            lease.expiresAt = Date.parse(data.expires_at);
            var date = Date.parse(response.headers.get("Date") || "");
            if (!isNaN(date)) self.clockOffset = date - Date.now();
            self.expiredSaid = false;
            self.tick();
          } else if (response.status === 409) {
            self.refused = true;
            if (o.onRefused) o.onRefused(data.detail || "it is closed.");
          }
        });
      })
      .catch(function () { /* the countdown keeps showing the truth */ })
      .then(function () { self.renewing = false; });
  };

  window.LeaseClock = LeaseClock;

  // The writing page: one lease, from #lease's data attributes.
  var node = document.getElementById("lease");
  if (!node || !node.getAttribute("data-renew-url")) return;
  var announcer = document.getElementById("announcer");
  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 30);
  }
  var clock = new LeaseClock({
    node: node,
    left: document.getElementById("lease-left"),
    suffix: document.getElementById("lease-suffix"),
    onLow: function () { announce("About one minute left on this task. Press any key to keep it."); },
    onExpired: function () {
      announce("Your lease ran out. Submitting still works if nobody took this task meanwhile.");
    },
    onRefused: function (detail) {
      var alert = document.getElementById("alert");
      if (!alert) return;
      // Beside what the alert already says (a rejected answer's errors stay readable).
      if (alert.hidden) alert.replaceChildren();
      var p = document.createElement("p");
      p.textContent = "Your lease could not be renewed: " + detail;
      alert.appendChild(p);
      alert.hidden = false;
    },
  });
  clock.start(
    { renewUrl: node.getAttribute("data-renew-url"), expiresAt: Date.parse(node.getAttribute("data-expires-at")) },
    Date.parse(node.getAttribute("data-server-now"))
  );
})();
