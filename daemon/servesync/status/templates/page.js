// servesync's status page (status/pages.py): filter by user and state (kept in
// the URL's #fragment), show times as "5m ago", reload every few seconds.
"use strict";
(function () {
  const refresh = Number(document.body.dataset.refresh || 10) * 1000;
  const user = document.getElementById("f-user");
  const state = document.getElementById("f-state");
  function apply() {
    const u = user ? user.value : "", s = state ? state.value : "";
    document.querySelectorAll("tr.model").forEach((tr) => {
      tr.hidden = (u && tr.dataset.user !== u) || (s && tr.dataset.state !== s);
    });
    document.querySelectorAll("tbody[data-user]").forEach((tb) => {
      tb.hidden = !tb.querySelector("tr.model:not([hidden])");
    });
    if (user) history.replaceState(null, "", "#" + new URLSearchParams({ user: u, state: s }));
  }
  if (user && state) {
    const want = new URLSearchParams(location.hash.slice(1));
    user.value = want.get("user") || "";
    state.value = want.get("state") || "";
    user.addEventListener("change", apply);
    state.addEventListener("change", apply);
    apply();
  }
  const now = Date.now();
  document.querySelectorAll("time.since").forEach((t) => {
    const s = Math.max(0, Math.round((now - Date.parse(t.getAttribute("datetime"))) / 1000));
    if (Number.isNaN(s)) return;
    t.title = t.textContent;
    t.textContent = s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min"
      : s < 172800 ? Math.round(s / 3600) + " h" : Math.round(s / 86400) + " d";
  });
  setTimeout(() => location.reload(), refresh);
})();
