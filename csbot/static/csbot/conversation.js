// The conversation page: accept / edit / ignore a draft and send, from the keyboard too.
(function () {
  const form = document.getElementById("reply-form");
  const text = document.getElementById("reply-text");
  const kind = document.getElementById("kind");
  const actions = document.getElementById("composer-actions");
  let sending = false;
  function draftText() {
    const el = document.getElementById("draft-text");
    return el ? el.dataset.text : null;
  }
  function compose(mode) {
    const draft = draftText();
    if (draft === null) return;
    kind.value = mode;
    text.hidden = false;
    actions.hidden = false;
    text.value = mode === "edit" ? draft : "";
    text.focus();
    if (mode === "edit") text.setSelectionRange(text.value.length, text.value.length);
  }
  function accept() {
    const draft = draftText();
    if (draft === null || sending) return;
    kind.value = "use";
    text.value = draft;
    send();
  }
  function send() {
    if (sending || !text.value.trim()) return;
    sending = true;
    form.submit();
  }
  form && form.addEventListener("submit", function (e) {
    if (sending) { e.preventDefault(); return; }
    sending = true;
  });
  document.addEventListener("click", function (e) {
    const button = e.target.closest("[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "accept") accept(); else compose(action);
  });
  // A draft that arrives while the agent is already typing must not wipe the text.
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target.id !== "draft-panel") return;  // not the insert picker's results
    const id = document.getElementById("draft-panel-state");
    if (id && id.dataset.draftId) document.getElementById("draft-id").value = id.dataset.draftId;
    if (draftText() !== null && kind && kind.value === "none") {
      kind.value = "ignore";
      if (!text.value) { text.hidden = true; actions.hidden = true; }
    }
  });
  // --- Insert a macro or an article link into the reply box -----------------------------
  // The server fills the text (placeholders, "Title: URL") and refuses another team's ids;
  // this only puts it at the caret (or at the end when the agent has not placed one yet).
  const picker = document.getElementById("insert-picker");
  const search = document.getElementById("insert-q");
  const results = document.getElementById("insert-results");
  const status = document.getElementById("insert-status");
  let caret = null;  // [start, end] of the agent's last selection in the reply box
  function rememberCaret() { caret = [text.selectionStart, text.selectionEnd]; }
  if (text) ["keyup", "click", "select", "input"].forEach(function (t) { text.addEventListener(t, rememberCaret); });
  function insertText(snippet) {
    if (text.hidden) {
      // A draft is on screen and no composer is open: inserting starts the agent's own reply.
      compose("ignore");
      caret = null;
    }
    let start = text.value.length, end = text.value.length;
    if (caret !== null && caret[1] <= text.value.length) { start = caret[0]; end = caret[1]; }
    else if (text.value && !/\s$/.test(text.value)) snippet = "\n" + snippet;
    text.setRangeText(snippet, start, end, "end");
    text.dispatchEvent(new Event("input", { bubbles: true }));
    text.focus();
    rememberCaret();
  }
  function openPicker() {
    if (!picker) return;
    picker.open = true;
    search.focus();
  }
  function closePicker() {
    picker.open = false;
    if (text && !text.hidden) text.focus(); else picker.querySelector("summary").focus();
  }
  function choices() { return Array.from(results.querySelectorAll(".insert-choice")); }
  if (picker) {
    picker.addEventListener("toggle", function () {
      if (!picker.open) return;
      if (!picker.dataset.loaded) {
        picker.dataset.loaded = "1";
        htmx.ajax("GET", picker.dataset.searchUrl, { target: "#insert-results", swap: "innerHTML" });
      }
      search.focus();
    });
    results.addEventListener("click", function (e) {
      const button = e.target.closest(".insert-choice");
      if (!button) return;
      fetch(button.dataset.insertUrl, { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (snippet) {
          insertText(snippet);
          status.textContent = "Inserted " + button.dataset.insertLabel + ".";
          picker.open = false;
          text.focus();
        })
        .catch(function () { status.textContent = "Could not insert " + button.dataset.insertLabel + "."; });
    });
    picker.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); closePicker(); return; }
      if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
      const list = choices();
      if (!list.length) return;
      e.preventDefault();
      const at = list.indexOf(document.activeElement);
      if (e.key === "ArrowDown") list[Math.min(at + 1, list.length - 1)].focus();
      else if (at <= 0) search.focus();
      else list[at - 1].focus();
    });
  }

  // --- The draft while it is written (server-sent events) ---------------------------------
  // The worker publishes the first tier's text so far (drafting.streaming); the stream view
  // (csbot/console/streaming.py) sends it here. Accept/edit/ignore stay disabled and a/e/i do
  // nothing meanwhile: there is no #draft-text until the final panel is loaded. The panel's
  // 1 s htmx poll is the fallback: held back while a stream is open, it takes over when the
  // stream fails or times out.
  let source = null;  // the open EventSource, if any
  let streamFailed = false;  // once a stream failed on this page, the poll does the work
  function panelState() { return document.getElementById("draft-panel-state"); }
  function streamNote(message) {
    const note = document.getElementById("draft-stream-note");
    if (note) note.textContent = message;
  }
  function stopStream() {
    if (source) { source.close(); source = null; }
  }
  function startStream() {
    const state = panelState();
    if (source || streamFailed || !window.EventSource || !state || !state.dataset.streamUrl) return;
    const panelUrl = state.dataset.panelUrl;
    source = new EventSource(state.dataset.streamUrl);
    source.addEventListener("state", function (e) {
      const data = JSON.parse(e.data);
      const current = panelState();
      if (current) current.dataset.stream = "open";
      const box = document.getElementById("draft-stream");
      if (data.status === "queued" && box) {
        // Back in the queue (its tier failed): what was shown is no draft.
        box.textContent = "";
        box.hidden = true;
        streamNote("Drafting a reply…");
      }
    });
    source.addEventListener("text", function (e) {
      const data = JSON.parse(e.data);
      const box = document.getElementById("draft-stream");
      if (!box) return;
      box.textContent = (data.at > 0 ? "…" : "") + data.text;
      box.hidden = false;
      streamNote("Writing the draft…");
    });
    source.addEventListener("improving", function () {
      const box = document.getElementById("draft-stream");
      if (box) box.style.opacity = "0.55";
      streamNote("Improving the draft… a stronger model is writing it; this text will be replaced.");
    });
    source.addEventListener("final", function () {
      stopStream();
      const box = document.getElementById("draft-stream");
      if (box) box.setAttribute("aria-busy", "false");
      // The final panel has the score, any escalation and the sources.
      htmx.ajax("GET", panelUrl, { target: "#draft-panel", swap: "innerHTML" });
    });
    source.addEventListener("timeout", function () { stopStream(); streamFailed = true; });
    source.onerror = function () { stopStream(); streamFailed = true; };
  }
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (source && e.detail.elt && e.detail.elt.id === "draft-panel-state") e.preventDefault();
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target.id === "draft-panel") startStream();  // a new pending draft
  });
  startStream();

  document.addEventListener("keydown", function (e) {
    // Letters typed on the intent list pick an intent; they are not shortcuts.
    if (e.target.closest("select")) return;
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); send(); return; }
    if (e.target.closest("input, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "a") { e.preventDefault(); accept(); }
    if (e.key === "e") { e.preventDefault(); compose("edit"); }
    if (e.key === "i") { e.preventDefault(); compose("ignore"); }
    if (e.key === "m" && picker) { e.preventDefault(); openPicker(); }
    if (e.key === "q") { window.location = document.getElementById("conversation").dataset.queueUrl; }
  });
})();
