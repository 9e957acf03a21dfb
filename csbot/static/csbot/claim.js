// The conversation's claim (templates/console/_claim.html): while another agent holds the
// conversation, the reply part of the page is inert (no clicks, no focus) and its keyboard
// shortcuts do nothing, until this agent presses "Take over". The server refuses a reply
// under someone else's claim anyway; this only keeps the agent from typing one in vain.
(function () {
  const SHORTCUTS = ["a", "e", "i", "m"];
  function taken() {
    const banner = document.getElementById("claim");
    return !!banner && banner.dataset.state === "taken";
  }
  let wasLocked = null;
  function apply() {
    const reply = document.querySelector("#conversation .reply");
    if (!reply) return;
    const locked = taken();
    if (locked === wasLocked) return;  // the draft panel's polls swap too: leave focus alone
    wasLocked = locked;
    reply.inert = locked;
    reply.classList.toggle("locked", locked);
    const button = document.getElementById("take-over");
    if (locked && button) button.focus();
  }
  // Before conversation.js's own listener (capture, on window): swallow the reply shortcuts.
  window.addEventListener("keydown", function (e) {
    if (!taken()) return;
    // Ctrl+Enter sends; Alt+… are the composer tools'.
    const send = ((e.ctrlKey || e.metaKey) && e.key === "Enter") || e.altKey;
    const shortcut = !e.ctrlKey && !e.metaKey && !e.altKey && SHORTCUTS.includes(e.key)
      && !e.target.closest("input, textarea, select");
    if (send || shortcut) { e.preventDefault(); e.stopImmediatePropagation(); }
  }, true);
  // A forgotten tab must not hold the conversation for ever: the renewal is skipped while the
  // tab is hidden or nobody has touched the page for a whole lease (three renewal periods), so
  // the claim runs out and the conversation goes back to the queue. Any key, click or scroll
  // counts as the agent being there; the next renewal then claims it again if still free.
  let lastActive = Date.now();
  ["keydown", "pointerdown", "scroll", "input"].forEach(function (type) {
    window.addEventListener(type, function () { lastActive = Date.now(); }, { passive: true, capture: true });
  });
  document.addEventListener("htmx:beforeRequest", function (e) {
    const banner = e.target;
    if (!banner || banner.id !== "claim") return;
    const lease = 3 * 1000 * Number(banner.dataset.renewSeconds || 100);
    if (document.visibilityState !== "visible" || Date.now() - lastActive > lease) e.preventDefault();
  });
  // The renewal's answer replaces the banner: someone took over, or the claim came back.
  document.addEventListener("htmx:afterSwap", apply);
  document.addEventListener("htmx:oobAfterSwap", apply);
  apply();
})();
