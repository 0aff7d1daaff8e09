/*
 * Compare two responses side by side with word-level differences marked: words only on the
 * left are struck through in red, words only on the right underlined in green. Works on the
 * raw text of the cards on screen (read at click time, so comparisons swapped in by label.js
 * are covered) and only ever writes through textContent.
 */
(function () {
  "use strict";

  var panel = document.getElementById("compare");
  var cards = document.getElementById("cards");
  if (!panel || !cards) return;
  var pickA = document.getElementById("compare-a");
  var pickB = document.getElementById("compare-b");
  var show = document.getElementById("compare-show");
  var diff = document.getElementById("diff");
  var MAX_CELLS = 9000000; // LCS table limit (3,000 x 3,000 words of differing middle)

  function tokens(text) {
    return text.match(/\s+|[^\s]+/g) || [];
  }

  /* Operations [kind, token] with kind "=", "-" (left only) or "+" (right only). */
  function wordDiff(left, right) {
    var a = tokens(left);
    var b = tokens(right);
    var start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
    var endA = a.length;
    var endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA -= 1; endB -= 1; }
    var ops = [];
    var i;
    for (i = 0; i < start; i += 1) ops.push(["=", a[i]]);
    var n = endA - start;
    var m = endB - start;
    if (n * m > MAX_CELLS) {
      for (i = start; i < endA; i += 1) ops.push(["-", a[i]]);
      for (i = start; i < endB; i += 1) ops.push(["+", b[i]]);
    } else {
      // lcs[x][y]: longest common subsequence of a[start+x..endA) and b[start+y..endB).
      var width = m + 1;
      var lcs = new Uint32Array((n + 1) * width);
      for (var x = n - 1; x >= 0; x -= 1) {
        for (var y = m - 1; y >= 0; y -= 1) {
          lcs[x * width + y] = a[start + x] === b[start + y]
            ? lcs[(x + 1) * width + y + 1] + 1
            : Math.max(lcs[(x + 1) * width + y], lcs[x * width + y + 1]);
        }
      }
      var p = 0;
      var q = 0;
      while (p < n && q < m) {
        if (a[start + p] === b[start + q]) { ops.push(["=", a[start + p]]); p += 1; q += 1; }
        else if (lcs[(p + 1) * width + q] >= lcs[p * width + q + 1]) { ops.push(["-", a[start + p]]); p += 1; }
        else { ops.push(["+", b[start + q]]); q += 1; }
      }
      for (; p < n; p += 1) ops.push(["-", a[start + p]]);
      for (; q < m; q += 1) ops.push(["+", b[start + q]]);
    }
    for (i = endA; i < a.length; i += 1) ops.push(["=", a[i]]);
    return ops;
  }

  function fill(node, ops, keep, mark) {
    node.textContent = "";
    var run = "";
    function flush() { if (run) { node.appendChild(document.createTextNode(run)); run = ""; } }
    ops.forEach(function (op) {
      if (op[0] === "=") { run += op[1]; return; }
      if (op[0] !== keep) return;
      if (/^\s+$/.test(op[1])) { run += op[1]; return; }
      flush();
      var span = document.createElement(mark);
      span.className = keep === "-" ? "diff-del" : "diff-ins";
      span.textContent = op[1];
      node.appendChild(span);
    });
    flush();
  }

  function cardList() {
    return Array.prototype.slice.call(cards.querySelectorAll(".card"));
  }

  function nameOf(card) {
    return card.getAttribute("aria-label") || "Response";
  }

  function refresh() {
    var list = cardList();
    panel.hidden = list.length < 2;
    diff.hidden = true;
    [pickA, pickB].forEach(function (select, which) {
      select.textContent = "";
      list.forEach(function (card, index) {
        var option = document.createElement("option");
        option.value = String(index);
        option.textContent = nameOf(card);
        select.appendChild(option);
      });
      select.value = String(Math.min(which, list.length - 1));
    });
  }

  function compare() {
    var list = cardList();
    var left = list[Number(pickA.value)];
    var right = list[Number(pickB.value)];
    if (!left || !right) return;
    var a = left.querySelector(".raw").textContent;
    var b = right.querySelector(".raw").textContent;
    var ops = wordDiff(a, b);
    fill(document.getElementById("diff-a"), ops, "-", "del");
    fill(document.getElementById("diff-b"), ops, "+", "ins");
    document.getElementById("diff-a-name").textContent = nameOf(left);
    document.getElementById("diff-b-name").textContent = nameOf(right);
    var changed = ops.filter(function (op) { return op[0] !== "=" && !/^\s+$/.test(op[1]); });
    document.getElementById("diff-summary").textContent = left === right
      ? "The same response on both sides."
      : changed.length
        ? changed.filter(function (op) { return op[0] === "-"; }).length + " words only on the left, " +
          changed.filter(function (op) { return op[0] === "+"; }).length + " only on the right."
        : "The two texts are identical.";
    diff.hidden = false;
    diff.scrollIntoView({ block: "nearest" });
  }

  show.addEventListener("click", compare);
  document.getElementById("diff-close").addEventListener("click", function () {
    diff.hidden = true;
    show.focus();
  });
  new MutationObserver(refresh).observe(cards, { childList: true });
  refresh();
  window.rlhfDiff = { wordDiff: wordDiff };
})();
