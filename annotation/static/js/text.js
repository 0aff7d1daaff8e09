/*
 * Text blocks (annotation/templates/annotation/_text.html) on the labeling and History pages:
 * a "Raw text" toggle between the server's rendered Markdown and the text as written, and a
 * fold with "Show all" for long texts, so the page never nests small scroll boxes.
 * Used by label.js for comparisons it swaps in (window.rlhfText.wire).
 */
(function () {
  "use strict";

  function wire(root) {
    root.querySelectorAll("[data-text-block] .js-only").forEach(function (node) { node.hidden = false; });
    root.querySelectorAll("[data-text-block]").forEach(function (block) {
      if (block.hasAttribute("data-wired")) return; // wired once, by whichever script came first
      block.setAttribute("data-wired", "");
      var raw = block.querySelector('[data-action="raw"]');
      var fold = block.querySelector('[data-action="fold"]');
      var text = block.querySelector('[data-slot="text"]');
      var words = block.querySelector('[data-slot="words"]');
      if (raw) {
        raw.addEventListener("click", function () {
          var on = raw.getAttribute("aria-pressed") !== "true";
          raw.setAttribute("aria-pressed", on ? "true" : "false");
          text.querySelector(".md").hidden = on;
          text.querySelector(".raw").hidden = !on;
          measureFold(block);
        });
      }
      if (fold) {
        var setOpen = function (open) {
          block.classList.toggle("is-open", open);
          fold.setAttribute("aria-expanded", open ? "true" : "false");
          fold.textContent = open ? "Show less" : "Show all (" + (words ? words.textContent : "") + ")";
        };
        fold.addEventListener("click", function () {
          var open = !block.classList.contains("is-open");
          setOpen(open);
          if (!open) block.scrollIntoView({ block: "nearest" });
        });
        // Tab into a folded text (a link in it) unfolds it: focus must not land in the part
        // that is cut off or faded out.
        text.addEventListener("focusin", function (event) {
          if (event.target !== text && block.classList.contains("is-foldable") && !block.classList.contains("is-open")) {
            setOpen(true);
          }
        });
      }
      measureFold(block);
    });
  }

  function measureFold(block) {
    var fold = block.querySelector('[data-action="fold"]');
    var text = block.querySelector('[data-slot="text"]');
    var words = block.querySelector('[data-slot="words"]');
    if (!fold || !text || block.classList.contains("is-open")) return;
    block.classList.add("is-foldable");
    var long = text.scrollHeight > text.clientHeight + 24;
    block.classList.toggle("is-foldable", long);
    fold.hidden = !long;
    fold.textContent = "Show all (" + (words ? words.textContent : "") + ")";
  }

  window.rlhfText = { wire: wire, measure: measureFold };
  document.addEventListener("DOMContentLoaded", function () { wire(document); });
})();
