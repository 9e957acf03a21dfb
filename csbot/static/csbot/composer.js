// The composer tools on the reply box: shorten, friendlier, more formal, fix grammar,
// translate (Alt+1…Alt+5, working inside the box too), and Undo (Alt+Z), a stack of the texts
// the tools replaced. The server rewrites and records the cost (console:compose); this only
// sends the box's text and puts the answer in its place.
(function () {
  const tools = document.getElementById("composer-tools");
  const form = document.getElementById("reply-form");
  const text = document.getElementById("reply-text");
  if (!tools || !form || !text) return;
  const status = document.getElementById("composer-status");
  const undoButton = document.getElementById("composer-undo");
  const buttons = Array.from(tools.querySelectorAll("[data-tool]"));
  const history = [];  // the texts before each rewrite, the latest last
  let busy = false;

  function setBusy(on) {
    busy = on;
    tools.setAttribute("aria-busy", on ? "true" : "false");
    buttons.forEach(function (b) { b.disabled = on; });
    undoButton.disabled = on || history.length === 0;
    // The agent's typing during a rewrite would be lost when the answer replaces the text.
    text.readOnly = on;
  }

  function hasText() {
    if (text.hidden) {
      // A draft is on screen and the box is closed: the tool works on the draft, opened as
      // Edit opens it (conversation.js sets the reply's kind to "edit"; a changed text is
      // then recorded as an edit of the draft, as when the agent edits it by hand).
      const edit = document.querySelector('[data-action="edit"]');
      if (edit && !edit.disabled) edit.click();
    }
    return !text.hidden && text.value.trim() !== "";
  }

  function setText(value) {
    text.value = value;
    text.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function failure(data, code) {
    if (data && data.errors) {
      return Object.keys(data.errors).map(function (f) { return data.errors[f].join(" "); }).join(" ");
    }
    if (data && data.error) return data.error;
    return "The rewrite failed (" + code + "): your text is unchanged.";
  }

  function run(button) {
    if (busy) return;
    if (!hasText()) {
      status.textContent = "Nothing to rewrite yet: write the reply first.";
      return;
    }
    const before = text.value;
    const body = new FormData();
    body.append("tool", button.dataset.tool);
    body.append("text", before);
    if (form.elements.inbound_message_id) body.append("message_id", form.elements.inbound_message_id.value);
    setBusy(true);
    status.textContent = button.dataset.label + "…";
    fetch(tools.dataset.composeUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": form.elements.csrfmiddlewaretoken.value },
    })
      .then(function (r) {
        return r.json().catch(function () { return null; }).then(function (data) {
          if (!r.ok || !data || typeof data.text !== "string") {
            const refused = new Error(failure(data, r.status));
            refused.fromServer = true;
            throw refused;
          }
          history.push(before);
          setText(data.text);
          status.textContent = data.status;
        });
      })
      .catch(function (e) {
        status.textContent = e.fromServer ? e.message : "Could not reach csbot: your text is unchanged.";
      })
      .finally(function () {
        setBusy(false);
        text.focus();
      });
  }

  function undo() {
    if (busy || history.length === 0) return;
    setText(history.pop());
    undoButton.disabled = history.length === 0;
    status.textContent = "Undone: the text before the last rewrite is back.";
    text.focus();
  }

  tools.addEventListener("click", function (e) {
    const button = e.target.closest("[data-tool]");
    if (button) run(button);
    else if (e.target.closest("#composer-undo")) undo();
  });
  // Alt+digit and Alt+Z by key position (e.code): on some layouts Alt types another character.
  document.addEventListener("keydown", function (e) {
    if (!e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    if (e.code === "KeyZ") { e.preventDefault(); undo(); return; }
    const digit = /^Digit([1-9])$/.exec(e.code);
    const button = digit && buttons[Number(digit[1]) - 1];
    if (button) { e.preventDefault(); run(button); }
  });
})();
