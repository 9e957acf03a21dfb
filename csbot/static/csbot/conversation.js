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
  document.addEventListener("htmx:afterSwap", function () {
    const id = document.getElementById("draft-panel-state");
    if (id && id.dataset.draftId) document.getElementById("draft-id").value = id.dataset.draftId;
    if (draftText() !== null && kind && kind.value === "none") {
      kind.value = "ignore";
      if (!text.value) { text.hidden = true; actions.hidden = true; }
    }
  });
  document.addEventListener("keydown", function (e) {
    // Letters typed on the intent list pick an intent; they are not shortcuts.
    if (e.target.closest("select")) return;
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); send(); return; }
    if (e.target.closest("input, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "a") { e.preventDefault(); accept(); }
    if (e.key === "e") { e.preventDefault(); compose("edit"); }
    if (e.key === "i") { e.preventDefault(); compose("ignore"); }
    if (e.key === "q") { window.location = document.getElementById("conversation").dataset.queueUrl; }
  });
})();
