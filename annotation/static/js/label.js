/*
 * The labeling page, enhanced: rank by keyboard or drag and drop, submit and skip through
 * the JSON API, and load the next comparison without a reload.
 *
 * Without this script the page is a plain form that posts to the Django views. With it, the
 * form's own fields (rank_<id>, flag_<id>, rating_<id>, rationale, all_bad) stay the single
 * source of truth, so both paths send the same answer.
 *
 * Model output is untrusted: it reaches the page as HTML the server rendered and sanitized
 * (annotation/markdown.py), or through textContent; never as HTML built here.
 */
(function () {
  "use strict";

  var configNode = document.getElementById("label-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  var pairwise = config.project.task_type === "pairwise";
  var allowTies = config.project.allow_ties;
  // The number of ranks comes from the comparison on screen, never from the project's K.
  function rankCount() {
    return state.assignment ? state.assignment.ids.length : config.project.num_candidates;
  }

  var form = document.getElementById("task-form");
  var taskSection = document.getElementById("task");
  var doneSection = document.getElementById("done");
  var cardsNode = document.getElementById("cards");
  var promptNode = document.getElementById("prompt");
  var board = document.getElementById("rank-board");
  var alertNode = document.getElementById("alert");
  var announcer = document.getElementById("announcer");
  var todayNode = document.getElementById("today-count");
  var leaseNode = document.getElementById("lease");
  var leaseLeft = document.getElementById("lease-left");
  var leaseSuffix = document.getElementById("lease-suffix");
  var allBad = document.getElementById("all-bad");
  var rationale = document.getElementById("rationale");
  var skipButton = document.getElementById("skip-button");
  var pairSubmit = document.getElementById("pair-submit");
  var pairSelection = document.getElementById("pair-selection");
  var undoLast = document.getElementById("undo-last");
  var undoLastButton = document.getElementById("undo-last-button");

  var state = {
    assignment: null, // {id, ids}
    ranks: {}, // candidate id -> rank number (1 = best), absent when unranked
    history: [], // snapshots of `ranks` for undo
    tieArmed: false,
    started: performance.now(),
    token: null,
    busy: false,
    today: config.today,
    counted: {}, // assignment ids this page added to `today`
    choice: null, // pairwise: the selected verdict ("a", "b", "tie", "bad"), sent on Enter
    slotLost: Boolean(config.slot_lost), // a late answer was refused: keep it on screen, unsent
    undoTimer: null,
    focusBeforeBusy: null, // what had focus when a request disabled the form's buttons
  };
  var editing = config.editing; // correcting a submitted answer: where to go once stored
  var UNDO_SECONDS = 8;
  var CHOICE_NAMES = { a: "A is better", b: "B is better", tie: "Tie", bad: "Both bad" };

  document.querySelectorAll(".js-only").forEach(function (node) { node.hidden = false; });
  // Hints that match the device: touch gestures on a phone or tablet, keys elsewhere.
  var coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  document.querySelectorAll(coarse ? ".hint-keys" : ".hint-touch").forEach(function (node) { node.hidden = true; });
  document.documentElement.classList.toggle("is-touch", Boolean(coarse));

  // ---------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------

  function ordinal(n) {
    var suffix = n % 100 >= 10 && n % 100 <= 20 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
    return n + suffix;
  }

  function newToken() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues works on plain http too.
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function csrfToken() {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function url(template, id) {
    return template.replace("/0/", "/" + id + "/");
  }

  function announce(text) {
    // Clear first so that repeating the same message is announced again.
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 30);
  }

  function showError(detail, errors) {
    alertNode.textContent = "";
    var lines = [detail];
    if (errors) {
      Object.keys(errors).forEach(function (field) {
        var messages = errors[field];
        if (Array.isArray(messages)) {
          messages.forEach(function (m) { if (m !== detail && lines.indexOf(m) < 0) lines.push(String(m)); });
        }
      });
    }
    lines.forEach(function (line) {
      var p = document.createElement("p");
      p.textContent = line;
      alertNode.appendChild(p);
    });
    alertNode.hidden = false;
  }

  function clearError() {
    alertNode.hidden = true;
    alertNode.textContent = "";
  }

  function revealJsOnly(root) {
    root.querySelectorAll(".js-only").forEach(function (node) { node.hidden = false; });
  }

  function wireTextBlocks(root) {
    revealJsOnly(root);
    if (window.rlhfText) window.rlhfText.wire(root);
  }

  function cardOf(cid) {
    return cardsNode.querySelector('.card[data-candidate="' + cid + '"]');
  }

  // ---------------------------------------------------------------------------------------
  // Ranking state
  // ---------------------------------------------------------------------------------------

  function readRanksFromForm() {
    var ranks = {};
    if (!state.assignment) return ranks;
    state.assignment.ids.forEach(function (cid) {
      var select = form.querySelector('select[name="rank_' + cid + '"]');
      if (select && select.value) ranks[cid] = parseInt(select.value, 10);
    });
    return ranks;
  }

  // ---------------------------------------------------------------------------------------
  // The draft: what the labeler has given so far, kept per assignment for the tab's session,
  // so a reload (or a crash) mid-task gives back ranks, choice, flags, ratings and notes.
  // ---------------------------------------------------------------------------------------

  var DRAFT_PREFIX = "rlhf.draft.";
  var DRAFT_FIELDS = 'input[name^="flag_"], select[name^="rating_"], #rationale, #edited-text, #all-bad';

  // A field's name in the draft: a flag checkbox by its name and value (one per code), any
  // other field by its id or name (a rating's value changes, and an empty one must find it).
  function draftName(field) {
    return field.id || (field.type === "checkbox" ? field.name + "=" + field.value : field.name);
  }

  function draftKey(id) {
    return editing ? null : DRAFT_PREFIX + id;
  }

  function saveDraft() {
    if (!state.assignment || !draftKey(state.assignment.id)) return;
    var fields = {};
    form.querySelectorAll(DRAFT_FIELDS).forEach(function (field) {
      var name = draftName(field);
      fields[name] = field.type === "checkbox" ? field.checked : field.value;
    });
    var draft = { ranks: state.ranks, choice: state.choice, fields: fields };
    try { window.sessionStorage.setItem(draftKey(state.assignment.id), JSON.stringify(draft)); } catch (e) { /* no storage */ }
  }

  function takeDraft(id) {
    var key = draftKey(id);
    if (!key) return null;
    try {
      var text = window.sessionStorage.getItem(key);
      return text ? JSON.parse(text) : null;
    } catch (e) {
      return null;
    }
  }

  function dropDraft(id) {
    try { window.sessionStorage.removeItem(DRAFT_PREFIX + id); } catch (e) { /* no storage */ }
  }

  function restoreDraft(draft) {
    form.querySelectorAll(DRAFT_FIELDS).forEach(function (field) {
      var name = draftName(field);
      if (!(name in draft.fields)) return;
      if (field.type === "checkbox") field.checked = Boolean(draft.fields[name]);
      else field.value = String(draft.fields[name]);
    });
    var ranks = {};
    var K = state.assignment.ids.length;
    state.assignment.ids.forEach(function (cid) {
      var rank = draft.ranks && draft.ranks[cid];
      if (Number.isInteger(rank) && rank >= 1 && rank <= K) ranks[cid] = rank;
    });
    return ranks;
  }

  function maxRank() {
    var max = 0;
    Object.keys(state.ranks).forEach(function (cid) { max = Math.max(max, state.ranks[cid]); });
    return max;
  }

  // The best rank no response holds yet: after a drag put one on "4th", the next key or
  // Rank next gives 1st, not 5th (a rank past K, and the dragged one stored as best).
  function lowestFreeRank() {
    var taken = {};
    Object.keys(state.ranks).forEach(function (cid) { taken[state.ranks[cid]] = true; });
    var rank = 1;
    while (taken[rank]) rank += 1;
    return rank;
  }

  function setRanks(next, message) {
    state.history.push(Object.assign({}, state.ranks));
    state.ranks = next;
    render();
    if (message) announce(message);
  }

  function nameOf(cid) {
    var index = state.assignment.ids.indexOf(cid);
    return pairwise ? "Response " + "AB"[index] : "Response " + (index + 1);
  }

  function assignByKey(n) {
    var cid = state.assignment.ids[n - 1];
    if (cid === undefined) return;
    var tie = state.tieArmed;
    state.tieArmed = false;
    if (state.ranks[cid]) {
      announce(nameOf(cid) + " is already ranked " + ordinal(state.ranks[cid]) + ". Press U to undo.");
      render();
      return;
    }
    var max = maxRank();
    var rank = tie && max > 0 ? max : lowestFreeRank();
    var next = Object.assign({}, state.ranks);
    next[cid] = rank;
    setRanks(next, nameOf(cid) + (tie && max > 0 ? " tied at " : " ranked ") + ordinal(rank) + ".");
  }

  function armTie() {
    if (!allowTies) {
      announce("This project does not allow ties.");
      return;
    }
    if (maxRank() === 0) {
      announce("Rank a response first, then tie another with it.");
      return;
    }
    state.tieArmed = true;
    announce("Tie: press the number of the response that ties with rank " + ordinal(maxRank()) + ".");
    render();
  }

  function undo() {
    if (state.tieArmed) {
      state.tieArmed = false;
      render();
      announce("Tie cancelled.");
      return;
    }
    if (!state.history.length) {
      announce("Nothing to undo.");
      return;
    }
    state.ranks = state.history.pop();
    render();
    announce("Undone.");
  }

  function clearRanks() {
    if (!Object.keys(state.ranks).length) return;
    setRanks({}, "All ranks cleared.");
  }

  function dropOnRank(cid, rank) {
    var next = Object.assign({}, state.ranks);
    var previous = next[cid];
    if (rank === null) {
      delete next[cid];
    } else {
      if (!allowTies) {
        // One response per rank: the one already there swaps places with the dropped one.
        Object.keys(next).forEach(function (other) {
          if (Number(other) !== cid && next[other] === rank) {
            if (previous) next[other] = previous;
            else delete next[other];
          }
        });
      }
      next[cid] = rank;
    }
    setRanks(next, rank === null ? nameOf(cid) + " unranked." : nameOf(cid) + " ranked " + ordinal(rank) + ".");
  }

  // ---------------------------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------------------------

  function buildBoard() {
    if (!board) return;
    board.textContent = "";
    // A pointer aid only: the same information is in each card's rank field and badge.
    board.setAttribute("aria-hidden", "true");
    board.removeAttribute("role");
    board.removeAttribute("aria-label");
    var K = rankCount();
    for (var r = 1; r <= K; r += 1) board.appendChild(makeSlot(r, ordinal(r) + (r === 1 ? " · best" : r === K ? " · worst" : "")));
    var pool = makeSlot(null, "Unranked");
    pool.classList.add("slot-pool");
    board.appendChild(pool);
    board.hidden = false;
    keepFocusClearOfBoard();
  }

  /*
   * The board sticks to the top of the viewport while the labeler reads. Scrolling a focused
   * control into view (Tab, Shift+Tab) must leave it below the board, not under it: the page's
   * scroll padding follows the board's height while it sticks.
   */
  var boardWatch = null;
  function keepFocusClearOfBoard() {
    var root = document.documentElement;
    function fit() {
      var sticks = !board.hidden && window.getComputedStyle(board).position === "sticky";
      root.style.scrollPaddingTop = sticks ? board.offsetHeight + 8 + "px" : "";
    }
    fit();
    if (!boardWatch && window.ResizeObserver) {
      boardWatch = new ResizeObserver(fit);
      boardWatch.observe(board);
      window.addEventListener("resize", fit);
    }
  }

  function makeSlot(rank, label) {
    var slot = document.createElement("div");
    slot.className = "slot";
    slot.setAttribute("data-rank", rank === null ? "" : String(rank));
    var title = document.createElement("span");
    title.className = "slot-label";
    title.textContent = label;
    var items = document.createElement("div");
    items.className = "slot-items";
    slot.appendChild(title);
    slot.appendChild(items);
    slot.addEventListener("dragover", function (event) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      slot.classList.add("is-over");
    });
    slot.addEventListener("dragleave", function () { slot.classList.remove("is-over"); });
    slot.addEventListener("drop", function (event) {
      event.preventDefault();
      slot.classList.remove("is-over");
      var cid = parseInt(event.dataTransfer.getData("text/plain"), 10);
      if (!state.assignment || state.assignment.ids.indexOf(cid) < 0) return;
      dropOnRank(cid, rank);
    });
    return slot;
  }

  function makeDraggable(node, cid) {
    node.setAttribute("draggable", "true");
    node.addEventListener("dragstart", function (event) {
      event.dataTransfer.setData("text/plain", String(cid));
      event.dataTransfer.effectAllowed = "move";
      var card = cardOf(cid);
      if (card) card.classList.add("is-dragging");
    });
    node.addEventListener("dragend", function () {
      var card = cardOf(cid);
      if (card) card.classList.remove("is-dragging");
    });
  }

  function fillRankOptions(select) {
    select.textContent = "";
    var none = document.createElement("option");
    none.value = "";
    none.textContent = "–";
    select.appendChild(none);
    for (var r = 1; r <= rankCount(); r += 1) {
      var option = document.createElement("option");
      option.value = String(r);
      option.textContent = ordinal(r);
      select.appendChild(option);
    }
  }

  function renderChoice() {
    form.querySelectorAll("[data-choice]").forEach(function (button) {
      var on = button.getAttribute("data-choice") === state.choice;
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.classList.toggle("is-selected", on);
    });
    if (state.assignment) {
      state.assignment.ids.forEach(function (cid, index) {
        var card = cardOf(cid);
        if (!card) return;
        var letter = "ab"[index];
        card.classList.toggle("is-chosen", state.choice === letter);
        card.classList.toggle("is-rejected", state.choice === "ab"[1 - index]);
      });
    }
    if (pairSelection) {
      pairSelection.textContent = state.choice
        ? "Your choice: " + CHOICE_NAMES[state.choice] + (coarse ? ". Tap Submit to send it." : ". Press Enter or Submit to send it.")
        : coarse ? "Nothing selected yet: tap a choice." : "Nothing selected yet: press A, B" + (allowTies ? ", T" : "") + " or X.";
    }
    if (pairSubmit) pairSubmit.disabled = state.busy || !state.choice || state.slotLost;
  }

  function selectChoice(choice) {
    if (choice === "tie" && !allowTies) return;
    state.choice = choice;
    renderChoice(); // #pair-selection, a live region, says the choice
    if (!pairSelection) announce("Selected: " + CHOICE_NAMES[choice] + ". Press Enter to submit.");
  }

  /*
   * A focused button that is about to be disabled drops focus to <body>, and a screen reader
   * loses its place. Focus moves on first: to the next response's "Rank next", or to Submit
   * once every response is ranked.
   */
  function focusPastRanked(cid) {
    var ids = state.assignment.ids;
    var start = ids.indexOf(cid);
    for (var step = 1; step < ids.length; step += 1) {
      var other = ids[(start + step) % ids.length];
      var button = !state.ranks[other] && cardOf(other) && cardOf(other).querySelector('[data-action="rank-next"]');
      if (button && !button.hidden) { button.focus(); return; }
    }
    var submit = document.getElementById("submit-button");
    if (submit) submit.focus();
  }

  function render() {
    if (pairwise) { renderChoice(); return; }
    if (!state.assignment) return;
    var focused = document.activeElement;
    state.assignment.ids.forEach(function (cid) {
      var card = cardOf(cid);
      if (!card) return;
      var rank = state.ranks[cid];
      var select = card.querySelector('select[data-field="rank"]');
      if (select) {
        // A template option list from another K is rebuilt for this comparison.
        if (select.options.length !== state.assignment.ids.length + 1) fillRankOptions(select);
        select.value = rank ? String(rank) : "";
        if (rank) {
          select.removeAttribute("aria-invalid");
          select.removeAttribute("aria-describedby");
        }
      }
      var badge = card.querySelector('[data-slot="badge"]');
      if (badge) {
        badge.hidden = !rank;
        badge.textContent = rank ? ordinal(rank) : "";
      }
      card.classList.toggle("is-ranked", Boolean(rank));
      var rankNext = card.querySelector('[data-action="rank-next"]');
      if (rankNext) {
        var off = Boolean(rank) || state.busy;
        if (off && rankNext === focused && !state.busy) focusPastRanked(cid);
        rankNext.disabled = off;
      }
    });
    if (board) {
      board.querySelectorAll(".slot-items").forEach(function (items) { items.textContent = ""; });
      state.assignment.ids.forEach(function (cid, index) {
        var rank = state.ranks[cid];
        var slot = board.querySelector('.slot[data-rank="' + (rank ? rank : "") + '"]') ||
          board.querySelector('.slot[data-rank=""]');
        var chip = document.createElement("span");
        chip.className = "chip";
        chip.textContent = String(index + 1);
        chip.title = "Response " + (index + 1);
        chip.setAttribute("data-candidate", String(cid));
        makeDraggable(chip, cid);
        makePointerDraggable(chip, cid);
        slot.querySelector(".slot-items").appendChild(chip);
      });
      board.classList.toggle("is-tie-armed", state.tieArmed);
    }
    var undoButton = document.getElementById("undo-button");
    // aria-disabled, not disabled: the button keeps focus after its last undo (pressing it
    // then says "Nothing to undo.").
    if (undoButton) undoButton.setAttribute("aria-disabled", !state.history.length && !state.tieArmed ? "true" : "false");
    saveDraft();
  }

  // ---------------------------------------------------------------------------------------
  // Tasks
  // ---------------------------------------------------------------------------------------

  /*
   * Pointer dragging of the board's chips (touch, pen or mouse): HTML5 drag and drop does not
   * fire on touch screens. A chip follows the finger; lifting it over a slot ranks there.
   */
  function makePointerDraggable(chip, cid) {
    chip.addEventListener("pointerdown", function (event) {
      if (event.pointerType === "mouse") return; // the mouse keeps HTML5 drag and drop
      event.preventDefault();
      chip.setPointerCapture(event.pointerId);
      chip.classList.add("is-moving");
      var startX = event.clientX;
      var startY = event.clientY;
      function slotAt(x, y) {
        chip.style.visibility = "hidden";
        var under = document.elementFromPoint(x, y);
        chip.style.visibility = "";
        return under && under.closest && under.closest(".slot");
      }
      function move(e) {
        chip.style.transform = "translate(" + (e.clientX - startX) + "px," + (e.clientY - startY) + "px)";
        board.querySelectorAll(".slot").forEach(function (s) { s.classList.remove("is-over"); });
        var slot = slotAt(e.clientX, e.clientY);
        if (slot) slot.classList.add("is-over");
      }
      function up(e) {
        chip.removeEventListener("pointermove", move);
        chip.removeEventListener("pointerup", up);
        chip.removeEventListener("pointercancel", up);
        chip.style.transform = "";
        chip.classList.remove("is-moving");
        board.querySelectorAll(".slot").forEach(function (s) { s.classList.remove("is-over"); });
        if (e.type !== "pointerup") return;
        var slot = slotAt(e.clientX, e.clientY);
        if (!slot) return;
        var value = slot.getAttribute("data-rank");
        dropOnRank(cid, value ? parseInt(value, 10) : null);
      }
      chip.addEventListener("pointermove", move);
      chip.addEventListener("pointerup", up);
      chip.addEventListener("pointercancel", up);
    });
  }

  function wireCard(card, cid) {
    var rankNext = card.querySelector('[data-action="rank-next"]');
    if (rankNext) {
      rankNext.hidden = false;
      rankNext.addEventListener("click", function () {
        // A tap gives the next rank (a tie when "=" was pressed first), like the number key.
        assignByKey(state.assignment.ids.indexOf(cid) + 1);
      });
    }
    var handle = card.querySelector(".drag-handle");
    if (handle) {
      handle.hidden = false;
      makeDraggable(handle, cid);
    }
    var select = card.querySelector('select[data-field="rank"]');
    if (select) {
      select.addEventListener("change", function () {
        var next = Object.assign({}, state.ranks);
        if (select.value) next[cid] = parseInt(select.value, 10);
        else delete next[cid];
        setRanks(next);
      });
    }
  }

  /*
   * Show a comparison leased through the API: its prompt and cards come from the server as
   * HTML (the assignment-fragment view), rendered and sanitized exactly like a page load.
   */
  function renderTask(assignment, serverDate) {
    return fetch(url(config.urls.fragment, assignment.id), {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    }).then(function (response) {
      if (handleAuth(response)) return;
      if (!response.ok) { showError("Could not load the next comparison: reload the page."); return; }
      return response.text().then(function (html) {
        var fragment = new DOMParser().parseFromString(html, "text/html");
        var ids = assignment.comparison.candidates.map(function (c) { return c.id; });
        state.assignment = { id: assignment.id, ids: ids };
        promptNode.replaceChildren.apply(promptNode, Array.from(fragment.getElementById("fragment-prompt").childNodes));
        cardsNode.replaceChildren.apply(cardsNode, Array.from(fragment.getElementById("fragment-cards").childNodes));
        taskSection.hidden = false;
        doneSection.hidden = true;
        wireTextBlocks(promptNode);
        wireTextBlocks(cardsNode);
        ids.forEach(function (cid) {
          var card = cardOf(cid);
          if (card) wireCard(card, cid);
        });
        form.action = url(config.urls.form_submit, assignment.id);
        form.setAttribute("data-assignment", String(assignment.id));
        if (skipButton) skipButton.setAttribute("formaction", url(config.urls.form_skip, assignment.id));
        if (rationale) rationale.value = "";
        var editedText = document.getElementById("edited-text");
        if (editedText) editedText.value = "";
        if (allBad) allBad.checked = false;
        if (!pairwise) buildBoard();
        resetTaskState({});
        startLease(assignment.id, assignment.expires_at, serverDate);
        var heading = document.getElementById("task-heading");
        heading.focus({ preventScroll: true });
        taskSection.scrollIntoView({ block: "start" });
        announce("New comparison loaded.");
      });
    });
  }

  function resetTaskState(ranks) {
    state.ranks = ranks;
    state.history = [];
    state.tieArmed = false;
    state.started = performance.now();
    state.token = newToken();
    state.choice = null;
    state.slotLost = false;
    render();
  }

  function showDone() {
    state.assignment = null;
    taskSection.hidden = true;
    doneSection.hidden = false;
    leaseClock.stop();
    var heading = document.getElementById("done-heading");
    heading.focus({ preventScroll: true });
    announce("Nothing left to label.");
  }

  /*
   * The lease's countdown and renewal (lease.js). `serverNow` is the server's clock when the
   * lease was read (ms; null keeps the last known offset), so a skewed client clock counts
   * down the server's time.
   */
  var leaseClock = new window.LeaseClock({
    node: leaseNode,
    left: leaseLeft,
    suffix: leaseSuffix,
    busy: function () { return state.busy; },
    onAuth: handleAuth,
    onLow: function () { announce("About one minute left on this comparison. Press any key to keep it."); },
    onExpired: function () {
      announce("Your lease ran out. Submitting still works if nobody took this comparison meanwhile.");
    },
    // The answer tells why; submitting says so again. Said beside what the alert already
    // shows (why an answer was not accepted, say), not in its place.
    onRefused: function (detail) {
      var line = "Your lease could not be renewed: " + detail;
      if (alertNode.hidden) { showError(line); return; }
      var p = document.createElement("p");
      p.textContent = line;
      alertNode.appendChild(p);
    },
  });

  function startLease(id, expiresAt, serverNow) {
    if (editing) return; // a correction holds no lease
    leaseClock.start({ renewUrl: url(config.urls.renew, id), expiresAt: Date.parse(expiresAt) }, serverNow);
  }

  // ---------------------------------------------------------------------------------------
  // Talking to the API
  // ---------------------------------------------------------------------------------------

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": csrfToken(),
      },
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
  }

  function readJson(response) {
    return response.text().then(function (text) {
      try { return text ? JSON.parse(text) : {}; } catch (e) { return {}; }
    });
  }

  function handleAuth(response) {
    if (response.status === 401 || response.status === 403) {
      window.location.href = config.urls.login + "?next=" + encodeURIComponent(window.location.pathname);
      return true;
    }
    return false;
  }

  /*
   * While a request is on its way the form's buttons are disabled, which drops the focused one's
   * focus to <body>. When the request ends with the page unchanged (an error, a refusal), focus
   * goes back where it was; a new comparison or the "Next comparison" button takes it instead.
   */
  function setBusy(busy) {
    if (busy) state.focusBeforeBusy = document.activeElement;
    state.busy = busy;
    form.querySelectorAll("button").forEach(function (b) { b.disabled = busy; });
    form.setAttribute("aria-busy", busy ? "true" : "false");
    if (busy) return;
    render();
    var back = state.focusBeforeBusy;
    state.focusBeforeBusy = null;
    var lost = !document.activeElement || document.activeElement === document.body;
    if (lost && back && back !== document.body && document.contains(back) && !back.disabled) {
      back.focus({ preventScroll: true });
    }
  }

  function loadNext() {
    return post(config.urls.next).then(function (response) {
      if (handleAuth(response)) return;
      if (response.status === 204) { showDone(); return; }
      return readJson(response).then(function (data) {
        if (!response.ok) { showError(data.detail || "Could not load the next comparison."); return; }
        var date = Date.parse(response.headers.get("Date") || "");
        return renderTask(data.assignment, isNaN(date) ? null : date);
      });
    });
  }

  function showUndoLast(assignmentId) {
    if (!undoLast) return;
    window.clearTimeout(state.undoTimer);
    document.getElementById("undo-last-text").textContent = "Saved.";
    undoLast.hidden = false;
    undoLastButton.onclick = function () {
      // Reopen the answer just stored, prefilled; submitting it stores a correction.
      window.location.href = url(config.urls.edit, assignmentId) + "?next=" + encodeURIComponent(config.urls.label);
    };
    state.undoTimer = window.setTimeout(hideUndoLast, UNDO_SECONDS * 1000);
  }

  // "Undo last" goes after UNDO_SECONDS, but not from under the labeler: while it has focus
  // or the pointer it stays, and goes a moment after they leave it.
  function hideUndoLast() {
    if (undoLast.contains(document.activeElement) || undoLast.matches(":hover")) {
      state.undoTimer = window.setTimeout(hideUndoLast, 1000);
      return;
    }
    undoLast.hidden = true;
  }

  function showSlotLost(detail) {
    // Nothing was stored. Keep the labeler's ranking and rationale on screen (they may want
    // to copy the rationale) and let them move on when they are ready. The lease is gone:
    // stop its clock, whose refused renewal would otherwise replace this alert and its button.
    state.slotLost = true;
    leaseClock.stop();
    showError(detail + " Nothing was stored; your answer is still on screen.");
    var next = document.createElement("button");
    next.type = "button";
    next.className = "button";
    next.id = "next-button";
    next.textContent = "Next comparison";
    next.addEventListener("click", function () {
      // A refused correction: the labeling page itself, out of correction mode (which holds
      // no lease and returns to History), as the plain form's "Next comparison" link does.
      if (editing) {
        window.location.href = config.urls.label;
        return;
      }
      clearError();
      state.slotLost = false;
      loadNext();
    });
    alertNode.appendChild(next);
    render();
    next.focus();
  }

  function send(payload) {
    if (state.busy || !state.assignment) return;
    if (state.slotLost) {
      announce("This answer can no longer be sent: use Next comparison.");
      alertNode.hidden = false;
      var next = alertNode.querySelector("button, a");
      if (next) next.focus();
      return;
    }
    clearError();
    setBusy(true);
    var sentId = state.assignment.id;
    post(url(config.urls.submit, state.assignment.id), payload)
      .then(function (response) {
        if (handleAuth(response)) return;
        return readJson(response).then(function (data) {
          if (response.status === 201 || response.status === 200) {
            dropDraft(sentId);
            if (editing) {
              window.location.href = editing;
              return;
            }
            // Once per assignment. A 200 is a retry of an answer already stored: its first
            // reply was lost (not counted yet), or it came and loading the next comparison
            // failed (counted then).
            if (!state.counted[sentId]) {
              state.counted[sentId] = true;
              state.today += 1;
              todayNode.textContent = String(state.today);
            }
            return loadNext().then(function () { showUndoLast(sentId); });
          }
          if (response.status === 409) {
            showSlotLost(data.detail || "This answer could not be stored.");
            return;
          }
          showError(data.detail || "The answer was not accepted.", data.errors);
        });
      })
      .catch(function () {
        // The same client_token is sent again on retry, so a lost answer is never doubled.
        showError("Network error: nothing is lost, try again.");
      })
      .then(function () { setBusy(false); });
  }

  function collectExtras(payload) {
    var flags = {};
    var ratings = {};
    state.assignment.ids.forEach(function (cid) {
      var codes = Array.prototype.map.call(
        form.querySelectorAll('input[name="flag_' + cid + '"]:checked'),
        function (input) { return input.value; }
      );
      if (codes.length) flags[cid] = codes;
      var rating = form.querySelector('select[name="rating_' + cid + '"]');
      if (rating && rating.value) ratings[cid] = parseInt(rating.value, 10);
    });
    payload.flags = flags;
    payload.ratings = ratings;
    payload.rationale = rationale ? rationale.value : "";
    var editedText = document.getElementById("edited-text");  // allow_edit projects only
    if (editedText) payload.edited_text = editedText.value;
    payload.time_spent_ms = Math.max(0, Math.round(performance.now() - state.started));
    payload.client_token = state.token;
    return payload;
  }

  function submitRanking() {
    if (!state.assignment || state.busy) return;
    var ids = state.assignment.ids;
    var ranked = ids.filter(function (cid) { return state.ranks[cid]; });
    var all = allBad && allBad.checked;
    var ranking;
    if (!ranked.length && all) {
      ranking = [ids.slice()];
    } else if (ranked.length < ids.length) {
      var unranked = ids.filter(function (cid) { return !state.ranks[cid]; });
      showError("Rank every response (missing: " + unranked.map(nameOf).join(", ").toLowerCase() + ").");
      // The fields left empty say so too, and point at the alert that says why.
      unranked.forEach(function (cid) {
        var select = cardOf(cid) && cardOf(cid).querySelector('select[data-field="rank"]');
        if (select) {
          select.setAttribute("aria-invalid", "true");
          select.setAttribute("aria-describedby", "alert");
        }
      });
      return;
    } else {
      var tiers = {};
      ids.forEach(function (cid) { (tiers[state.ranks[cid]] = tiers[state.ranks[cid]] || []).push(cid); });
      ranking = Object.keys(tiers).map(Number).sort(function (a, b) { return a - b; }).map(function (r) { return tiers[r]; });
      // As the server rules: every response in one tier with "all bad" states no preference,
      // allowed where ties are off (a stored all-bad answer is prefilled so when corrected).
      var noPreference = all && ranking.length === 1;
      if (!allowTies && !noPreference && ranking.some(function (tier) { return tier.length > 1; })) {
        showError("This project does not allow ties: give each response its own rank.");
        return;
      }
    }
    send(collectExtras({ ranking: ranking, all_bad: Boolean(all) }));
  }

  function submitChoice(choice) {
    if (!state.assignment || state.busy) return;
    if (!choice) {
      announce("Choose first: A, B" + (allowTies ? ", T" : "") + " or X.");
      return;
    }
    if (choice === "tie" && !allowTies) return;
    var a = state.assignment.ids[0];
    var b = state.assignment.ids[1];
    var ranking = choice === "a" ? [[a], [b]] : choice === "b" ? [[b], [a]] : [[a, b]];
    send(collectExtras({ ranking: ranking, all_bad: choice === "bad" }));
  }

  function skip() {
    if (!state.assignment || state.busy) return;
    clearError();
    setBusy(true);
    var skipped = state.assignment.id;
    post(url(config.urls.skip, skipped))
      .then(function (response) {
        if (handleAuth(response)) return;
        if (response.ok || response.status === 409 || response.status === 404) {
          dropDraft(skipped);
          return loadNext();
        }
        return readJson(response).then(function (data) { showError(data.detail || "Could not skip."); });
      })
      .catch(function () { showError("Network error: try again."); })
      .then(function () { setBusy(false); });
  }

  // ---------------------------------------------------------------------------------------
  // Events
  // ---------------------------------------------------------------------------------------

  form.addEventListener("input", saveDraft);
  form.addEventListener("change", saveDraft);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var submitter = event.submitter;
    if (submitter && submitter.id === "skip-button") skip();
    else if (submitter && submitter.getAttribute("data-choice")) selectChoice(submitter.getAttribute("data-choice"));
    else if (pairwise) submitChoice(state.choice);
    else submitRanking();
  });
  if (pairSubmit) pairSubmit.addEventListener("click", function () { submitChoice(state.choice); });

  var undoButton = document.getElementById("undo-button");
  if (undoButton) undoButton.addEventListener("click", undo);
  var clearButton = document.getElementById("clear-button");
  if (clearButton) clearButton.addEventListener("click", clearRanks);

  // Single-key shortcuts can be turned off (a screen reader's keys, a stray keypress); the
  // choice is remembered in this browser.
  var singleKeys = document.getElementById("single-keys");
  var SINGLE_KEYS_STORE = "rlhf.singleKeys";
  if (singleKeys) {
    try { singleKeys.checked = window.localStorage.getItem(SINGLE_KEYS_STORE) !== "off"; } catch (e) { /* no storage */ }
    singleKeys.addEventListener("change", function () {
      try { window.localStorage.setItem(SINGLE_KEYS_STORE, singleKeys.checked ? "on" : "off"); } catch (e) { /* no storage */ }
      announce(singleKeys.checked ? "Single-key shortcuts on." : "Single-key shortcuts off.");
    });
  }

  function typingIn(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable) return true;
    return tag === "input" && !/^(checkbox|radio|button|submit|reset)$/.test(target.type);
  }

  document.addEventListener("keydown", function (event) {
    if (!state.assignment || taskSection.hidden) return;
    if (document.querySelector("dialog[open]")) return; // the walkthrough has the keys
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (pairwise) submitChoice(state.choice);
      else submitRanking();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typingIn(event.target)) return;
    if (singleKeys && !singleKeys.checked) return; // turned off: only Ctrl+Enter works
    var key = event.key;
    if (pairwise) {
      if (key === "Enter") {
        // Enter on another control (Skip, a link) keeps its own meaning.
        var target = event.target;
        var control = target && target.closest && target.closest("a, button:not([data-choice]), summary");
        if (control) return;
        event.preventDefault();
        // On a choice button: that choice, like a click; Enter again sends it.
        var focused = target && target.closest && target.closest("[data-choice]");
        if (focused && focused.getAttribute("data-choice") !== state.choice) {
          selectChoice(focused.getAttribute("data-choice"));
          return;
        }
        submitChoice(state.choice);
        return;
      }
      // A key selects, it never submits: only A, B, T and X (no number aliases, which in
      // ranking projects mean "give the next rank").
      var choice = { a: "a", b: "b", t: "tie", x: "bad" }[key.toLowerCase()];
      if (choice) {
        event.preventDefault();
        selectChoice(choice);
      }
      return;
    }
    if (/^[1-9]$/.test(key)) {
      event.preventDefault();
      assignByKey(parseInt(key, 10));
    } else if (key === "=") {
      event.preventDefault();
      armTie();
    } else if (key === "u" || key === "U" || key === "Backspace") {
      event.preventDefault();
      undo();
    } else if (key === "Escape" && state.tieArmed) {
      state.tieArmed = false;
      render();
      announce("Tie cancelled.");
    }
  });

  // ---------------------------------------------------------------------------------------
  // Start from what the server rendered
  // ---------------------------------------------------------------------------------------

  if (config.assignment) {
    state.assignment = {
      id: config.assignment.id,
      ids: config.assignment.candidate_ids,
    };
    if (!pairwise) buildBoard();
    wireTextBlocks(promptNode);
    wireTextBlocks(cardsNode);
    state.assignment.ids.forEach(function (cid) {
      var card = cardOf(cid);
      if (card) wireCard(card, cid);
    });
    // Ranks the server put back after a refused plain post, or a stored answer to correct;
    // else the draft of this assignment the tab kept before a reload.
    var slotLost = state.slotLost;
    var fromServer = readRanksFromForm();
    var draft = Object.keys(fromServer).length || config.assignment.choice ? null : takeDraft(state.assignment.id);
    resetTaskState(draft ? restoreDraft(draft) : fromServer);
    state.slotLost = slotLost;
    if (pairwise && config.assignment.choice) state.choice = config.assignment.choice;
    else if (pairwise && draft && draft.choice) state.choice = draft.choice;
    render();
    startLease(config.assignment.id, config.assignment.expires_at, Date.parse(config.server_now));
  } else if (!pairwise) {
    buildBoard();
  }
  document.documentElement.classList.add("js");
})();
