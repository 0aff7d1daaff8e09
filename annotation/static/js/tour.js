/*
 * The labeling page's walkthrough: shown on a labeler's first visit in this browser,
 * remembered in localStorage once closed, opened again with "How this page works".
 */
(function () {
  "use strict";
  var tour = document.getElementById("tour");
  var opener = document.getElementById("tour-open");
  if (!tour || typeof tour.showModal !== "function") return;
  var STORE = "rlhf.tourSeen";

  function seen() {
    try { return window.localStorage.getItem(STORE) === "1"; } catch (e) { return true; }
  }
  tour.addEventListener("close", function () {
    try { window.localStorage.setItem(STORE, "1"); } catch (e) { /* no storage */ }
    if (opener && !opener.hidden) opener.focus();
  });
  if (opener) {
    opener.hidden = false;
    opener.addEventListener("click", function () { tour.showModal(); });
  }
  if (!seen()) tour.showModal();
})();
