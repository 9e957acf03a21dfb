// The queue page: j / k move the selection, Enter opens the conversation, / goes to the
// search, n / p to the next / previous page. The results refresh every 5 s (htmx, with the
// same filters and page); the polite status line is read out only when the count changes.
(function () {
  let index = 0;
  let announced = null;
  function rows() { return Array.from(document.querySelectorAll("#queue-rows tr[data-href]")); }
  function mark() {
    const all = rows();
    index = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((r, i) => {
      r.classList.toggle("selected", i === index);
      if (i === index) r.setAttribute("aria-current", "true"); else r.removeAttribute("aria-current");
    });
  }
  function announce() {
    const summary = document.getElementById("queue-summary");
    const status = document.getElementById("queue-announcer");
    if (!summary || !status) return;
    const text = summary.textContent.replace(/\s+/g, " ").trim();
    if (announced !== null && text !== announced) status.textContent = text;
    announced = text;
  }
  document.addEventListener("htmx:afterSwap", function () { mark(); announce(); });
  document.addEventListener("keydown", function (e) {
    if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") {
      e.preventDefault();
      document.getElementById("queue-q").focus();
      return;
    }
    if (e.key === "n" || e.key === "p") {
      const link = document.getElementById(e.key === "n" ? "queue-next" : "queue-prev");
      if (link) window.location = link.href;
      return;
    }
    const all = rows();
    if (!all.length) return;
    if (e.key === "j") { index = Math.min(index + 1, all.length - 1); mark(); }
    if (e.key === "k") { index = Math.max(index - 1, 0); mark(); }
    if (e.key === "Enter" && !e.target.closest("a, button")) { window.location = all[index].dataset.href; }
  });
  mark();
  announce();
})();
