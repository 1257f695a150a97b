// ServiceRadar Edge web UI: the project's own small script. Pages work
// without it; it adds live updates (Server-Sent Events), slug suggestions
// with a live uniqueness check, fresh relative times, typed confirmations,
// the agent's command history following its status, and the wizard's
// cluster fields shown only for a cluster. No third-party code.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function setBadge(el, word, tone) {
    el.textContent = word;
    el.className = "badge tone-" + tone;
  }

  function relative(ms) {
    var secs = Math.round((Date.now() - ms) / 1000);
    var future = secs < 0;
    secs = Math.abs(secs);
    if (secs < 45) { return future ? "in a moment" : "just now"; }
    var amount;
    if (secs < 3600) { amount = Math.round(secs / 60) + " min"; }
    else if (secs < 86400) { amount = Math.round(secs / 3600) + " h"; }
    else { var d = Math.round(secs / 86400); amount = d + (d === 1 ? " day" : " days"); }
    return future ? "in " + amount : amount + " ago";
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-rel]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(ms)) { el.textContent = relative(ms); }
    });
  }

  function expired() {
    window.location.assign("/sign-in?expired=1");
  }

  function announce(text) {
    var live = document.getElementById("live-region");
    if (live) { live.textContent = text; }
  }

  function applyState(s) {
    document.querySelectorAll('[data-state="site_status"]').forEach(function (el) { setBadge(el, s.site_status, s.site_tone); });
    document.querySelectorAll('[data-state="leaf_status"]').forEach(function (el) { setBadge(el, s.leaf_status, s.leaf_tone); });
    document.querySelectorAll('[data-state="last_error"]').forEach(function (el) {
      el.textContent = s.last_error || "";
      el.hidden = !s.last_error;
    });
    document.querySelectorAll('[data-state="refusal"]').forEach(function (el) {
      el.textContent = s.refusal || "";
      el.hidden = !s.refusal;
    });
    document.querySelectorAll('[data-state="agent"]').forEach(function (el) {
      el.textContent = s.agent_seen ? "the agent reported " + relative(s.agent_last_seen) : "no contact from the agent yet";
    });
    var download = document.getElementById("download");
    if (download && s.bundle_ready && download.getAttribute("aria-disabled") === "true") {
      download.setAttribute("href", download.getAttribute("data-href"));
      download.removeAttribute("aria-disabled");
      var waiting = document.getElementById("download-waiting");
      if (waiting) { waiting.hidden = true; }
      announce("The bundle is ready to download.");
    }
    var ok = document.getElementById("verify-success");
    if (ok && s.leaf_connected && s.agent_seen && ok.hidden) {
      ok.hidden = false;
      var wait = document.getElementById("verify-waiting");
      if (wait) { wait.hidden = true; }
      announce("The site is connected.");
    }
    var leafOk = document.getElementById("leaf-connected");
    if (leafOk) { leafOk.hidden = !s.leaf_connected; }
    if (s.commands) { drawCommands(s.commands); }
  }

  function timeCell(ms) {
    var td = document.createElement("td");
    var t = document.createElement("time");
    var iso = new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
    t.setAttribute("datetime", iso);
    t.setAttribute("title", iso.replace("T", " ").replace("Z", " UTC"));
    t.setAttribute("data-rel", "");
    t.textContent = relative(ms);
    td.appendChild(t);
    return td;
  }

  // The site page's command history, redrawn from the live snapshot (text
  // only: nothing the agent reported is ever parsed as markup).
  function drawCommands(commands) {
    var table = document.getElementById("agent-commands");
    if (!table) { return; }
    var body = table.querySelector("tbody");
    var before = {};
    body.querySelectorAll("tr[data-command]").forEach(function (tr) {
      var badge = tr.querySelector(".badge");
      before[tr.getAttribute("data-command")] = badge ? badge.textContent : "";
    });
    var rows = document.createDocumentFragment();
    var changed = [];
    commands.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-command", c.id);
      var kind = document.createElement("td");
      var code = document.createElement("code");
      code.textContent = c.kind;
      kind.appendChild(code);
      var status = document.createElement("td");
      var badge = document.createElement("span");
      setBadge(badge, c.status, c.tone);
      status.appendChild(badge);
      var message = document.createElement("td");
      message.textContent = c.message;
      tr.appendChild(kind);
      tr.appendChild(status);
      tr.appendChild(message);
      tr.appendChild(timeCell(c.issued));
      tr.appendChild(timeCell(c.changed));
      rows.appendChild(tr);
      if (before[c.id] !== undefined && before[c.id] !== c.status) { changed.push(c.kind + " " + c.status); }
    });
    body.replaceChildren(rows);
    var wrap = document.getElementById("commands-wrap");
    if (wrap) { wrap.hidden = commands.length === 0; }
    var empty = document.getElementById("no-commands");
    if (empty) { empty.hidden = commands.length > 0; }
    if (changed.length) { announce("Command " + changed.join(", ") + "."); }
  }

  function clusterFields() {
    // Step 1 of the wizard: the cluster's fields only while a cluster is chosen.
    var fields = document.getElementById("cluster-fields");
    if (!fields) { return; }
    var radios = document.querySelectorAll('input[name="leaf_nodes"]');
    function update() {
      var three = document.querySelector('input[name="leaf_nodes"][value="3"]');
      fields.hidden = !(three && three.checked);
    }
    radios.forEach(function (r) { r.addEventListener("change", update); });
    update();
  }

  function live() {
    var url = document.body.getAttribute("data-live");
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url);
    source.addEventListener("site", function (e) {
      var d = JSON.parse(e.data);
      document.querySelectorAll('[data-site-status="' + d.site_id + '"]').forEach(function (el) { setBadge(el, d.status, d.tone); });
    });
    source.addEventListener("leaf", function (e) {
      var d = JSON.parse(e.data);
      document.querySelectorAll('[data-leaf-status="' + d.site_id + '"]').forEach(function (el) { setBadge(el, d.status, d.tone); });
    });
    source.addEventListener("state", function (e) { applyState(JSON.parse(e.data)); });
    source.addEventListener("alert", function (e) {
      var d = JSON.parse(e.data);
      var box = document.getElementById("live-alert");
      if (box) { box.hidden = false; box.textContent = "Alert " + d.status + ": " + d.message + " (reload to see the list)"; }
    });
    source.addEventListener("expired", function () { source.close(); expired(); });
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) { return; }
      // The stream was refused: find out whether the session ended.
      fetch(window.location.href, { redirect: "manual", credentials: "same-origin" }).then(function (r) {
        if (r.type === "opaqueredirect" || r.status === 401) { expired(); }
      });
    };
  }

  function slugify(text) {
    return text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
      .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/g, "");
  }

  function slugHelper() {
    var name = document.getElementById("name");
    var slug = document.getElementById("slug");
    var status = document.getElementById("slug-status");
    if (!name || !slug || !status) { return; }
    var edited = slug.value !== "";
    var timer = null;
    function check() {
      var value = slug.value;
      if (!value) { status.textContent = ""; return; }
      fetch("/admin/edge-sites/slug-check?slug=" + encodeURIComponent(value), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d || slug.value !== value) { return; }
          status.textContent = d.available ? "\u2713 " + value + " is available" : "\u2717 " + d.message;
          status.className = "hint " + (d.available ? "tone-good" : "tone-bad");
          slug.setAttribute("aria-invalid", d.available ? "false" : "true");
        });
    }
    function later() { clearTimeout(timer); timer = setTimeout(check, 250); }
    name.addEventListener("input", function () {
      if (!edited) { slug.value = slugify(name.value); later(); }
    });
    slug.addEventListener("input", function () { edited = slug.value !== ""; later(); });
    if (slug.value) { later(); }
  }

  function typedConfirm() {
    document.querySelectorAll("input[data-confirm-match]").forEach(function (input) {
      var button = document.getElementById(input.getAttribute("data-confirm-button"));
      if (!button) { return; }
      function update() { button.disabled = input.value !== input.getAttribute("data-confirm-match"); }
      input.addEventListener("input", update);
      update();
    });
  }

  function fetchForms() {
    // Forms marked data-fetch post in the background with the CSRF header
    // and reload the page's data without a full navigation.
    document.querySelectorAll("form[data-fetch]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        e.preventDefault();
        fetch(form.action, {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams(new FormData(form)).toString(), redirect: "manual"
        }).then(function (r) {
          if (r.type === "opaqueredirect" || r.ok) { window.location.reload(); }
          else { announce("The request failed (" + r.status + ")."); }
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    slugHelper();
    typedConfirm();
    fetchForms();
    clusterFields();
    refreshTimes();
    setInterval(refreshTimes, 30000);
  });
})();
