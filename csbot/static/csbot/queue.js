// The queue page: j / k move the selection, Enter opens the conversation.
(function () {
  let index = 0;
  function rows() { return Array.from(document.querySelectorAll("#queue-rows tr[data-href]")); }
  function mark() { rows().forEach((r, i) => r.classList.toggle("selected", i === index)); }
  document.addEventListener("htmx:afterSwap", mark);
  document.addEventListener("keydown", function (e) {
    if (e.target.closest("input, textarea")) return;
    const all = rows();
    if (!all.length) return;
    if (e.key === "j") { index = Math.min(index + 1, all.length - 1); mark(); }
    if (e.key === "k") { index = Math.max(index - 1, 0); mark(); }
    if (e.key === "Enter") { window.location = all[index].dataset.href; }
  });
  mark();
})();
