// crier's admin UI: one page, five views (#/overview, #/channels,
// #/connections, #/actions, #/config), built with DOM calls only (no
// innerHTML: channel and user names come from clients). It talks to
// the node's admin endpoints: /admin/init, /admin/auth, /admin/api,
// /admin/stats, /admin/connections, /admin/config, /admin/tail.
"use strict";
(function () {
  const base = location.pathname.replace(/[^/]*$/, ""); // the UI's prefix, with its slash
  const TOKEN_KEY = "crier-admin-token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let insecure = false;
  let timer = null;       // the current view's refresh
  let cleanup = [];       // what the current view opened (an EventSource)
  const main = document.getElementById("main");

  // ---- DOM helpers -------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k in el && k !== "list") el[k] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const num = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));
  function duration(s) {
    const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }
  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing yet.");
    return h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.num ? "num" : null, scope: "col" }, x.label || x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: headers[i].num ? "num" : null }, c)))))));
  }

  // ---- status and errors ------------------------------------------------
  const statusEl = document.getElementById("status");
  const errorEl = document.getElementById("error");
  function reachable(ok, why) {
    statusEl.textContent = ok ? "connected" : "server unreachable";
    statusEl.className = "status " + (ok ? "ok" : "bad");
    errorEl.hidden = ok;
    if (!ok) errorEl.textContent = "Cannot reach the crier server: " + why + ". Retrying every second; the figures shown are the last ones received.";
  }

  class Unauthorized extends Error {}

  async function request(path, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers["Authorization"] = "token " + token;
    let r;
    try {
      r = await fetch(base + path, Object.assign({}, opts, { headers }));
    } catch (e) {
      reachable(false, "no answer (" + e.message + ")");
      throw e;
    }
    reachable(true);
    if (r.status === 401) {
      token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("Your session ended: log in again.");
      throw new Unauthorized();
    }
    if (!r.ok) throw new Error("HTTP " + r.status + ": " + (await r.text()).trim());
    return r.json();
  }
  const api = (method, params) =>
    request("admin/api", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ method, params: params || {} }) });

  function every(ms, fn) {
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      try { await fn(); } catch (e) { if (e instanceof Unauthorized) return; }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }
  let stopRefresh = () => {};

  // ---- login --------------------------------------------------------------
  function showLogin(message) {
    stopView();
    document.getElementById("nav").hidden = true;
    document.getElementById("logout").hidden = true;
    const pw = h("input", { type: "password", id: "password", name: "password", autocomplete: "current-password", required: true, autofocus: true });
    const err = h("p", { class: "bad-text", id: "login-error", role: "alert" }, message || "");
    const form = h("form", { class: "card form login", id: "login" },
      h("h1", {}, "Log in"),
      h("label", {}, "Admin password (admin.password)", pw),
      h("button", { type: "submit" }, "Log in"), err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      let r;
      try {
        r = await fetch(base + "admin/auth", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ password: pw.value }) });
      } catch (e) {
        reachable(false, e.message);
        return;
      }
      reachable(true);
      if (r.status === 429) { err.textContent = "Too many attempts: wait a minute."; return; }
      if (!r.ok) { err.textContent = "Wrong password."; pw.select(); return; }
      token = (await r.json()).token;
      sessionStorage.setItem(TOKEN_KEY, token);
      start();
    });
    main.replaceChildren(form);
    pw.focus();
  }

  // ---- views --------------------------------------------------------------
  function stopView() {
    stopRefresh();
    stopRefresh = () => {};
    for (const f of cleanup) f();
    cleanup = [];
  }

  function route() {
    const view = (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0];
    const views = { overview, channels, connections, actions, config };
    const show = views[view] || overview;
    for (const a of document.querySelectorAll("nav a")) {
      if (a.getAttribute("href") === "#/" + (views[view] ? view : "overview")) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    stopView();
    show();
  }

  // Overview: nodes, this node's engine and transports, and charts.
  function overview() {
    const tiles = h("div", { class: "tiles", id: "tiles" });
    const nodes = h("div", { id: "nodes" });
    const engine = h("div", { id: "engine" });
    const transports = h("div", { id: "transports" });
    const charts = [
      { id: "chart-rates", title: "Publications and deliveries per second", series: [["publications", "publications/s"], ["deliveries", "deliveries/s"]] },
      { id: "chart-latency", title: "Latency, ms", series: [["delivery_p50_ms", "delivery p50"], ["delivery_p99_ms", "delivery p99"], ["publish_p50_ms", "publish p50"], ["publish_p99_ms", "publish p99"]] },
      { id: "chart-disconnects", title: "Disconnects per second, by code", series: "disconnects" },
      { id: "chart-clients", title: "Clients and subscriptions", series: [["clients", "clients"], ["subscriptions", "subscriptions"]] },
    ].map((c) => Object.assign(c, { canvas: h("canvas", { id: c.id, role: "img", "aria-label": c.title }), legend: h("div", { class: "legend" }) }));
    main.replaceChildren(
      h("h1", {}, "Overview"), tiles,
      h("div", { class: "grid" },
        h("section", { class: "card wide" }, h("h2", {}, "Nodes"), nodes),
        h("section", { class: "card" }, h("h2", {}, "Engine"), engine),
        h("section", { class: "card" }, h("h2", {}, "Connections by transport (this node)"), transports),
        charts.map((c) => h("section", { class: "card" }, h("h2", {}, c.title), c.canvas, c.legend))));
    stopRefresh = every(1000, async () => {
      const s = await request("admin/stats");
      const sum = (k) => s.nodes.reduce((a, n) => a + (n[k] || 0), 0);
      const last = (k) => { const v = s.series[k]; return v && v.length ? v[v.length - 1] : 0; };
      tiles.replaceChildren(
        ...[["nodes", s.nodes.length], ["clients", sum("num_clients")], ["users", sum("num_users")], ["subscriptions", sum("num_subs")], ["channels", sum("num_channels")], ["publications/s", last("publications")], ["deliveries/s", last("deliveries")]]
          .map(([label, v]) => h("div", { class: "tile", "data-figure": label }, h("b", {}, num(v)), h("span", {}, label))));
      const heard = (n) => {
        if (n.uid === s.node.name) return h("span", { class: "ok-text" }, "this node");
        const ago = s.heard_ms_ago[n.uid];
        if (ago == null) return "–";
        // Silent for more than two rounds: say so (it leaves the list at 10 s).
        return ago > 2 * s.node_info_every_ms
          ? h("span", { class: "bad-text" }, "unreachable: silent for " + Math.round(ago / 1000) + " s")
          : h("span", { class: "ok-text" }, "heard " + Math.round(ago / 1000) + " s ago");
      };
      nodes.replaceChildren(table(
        ["Name", "Version", "State", { label: "Uptime", num: true }, { label: "Clients", num: true }, { label: "Users", num: true }, { label: "Subscriptions", num: true }, { label: "Channels", num: true }],
        s.nodes.map((n) => [n.name, n.version, heard(n), duration(n.uptime || 0), num(n.num_clients), num(n.num_users), num(n.num_subs), num(n.num_channels)])));
      const e = s.node.engine;
      engine.replaceChildren(h("p", {}, h("b", {}, e.kind), " — ",
        e.ok ? h("span", { class: "ok-text" }, "answering") : h("span", { class: "bad-text" }, e.error || "not answering")),
        h("p", { class: "muted" }, "crier " + s.node.version + ", node " + s.node.name + ", up " + duration(s.node.uptime)));
      transports.replaceChildren(table(["Transport", { label: "Open", num: true }],
        Object.entries(s.node.connections).map(([t, n]) => [t, num(n)])));
      for (const c of charts) {
        const series = c.series === "disconnects"
          ? [["slow", "3008 slow (hub)"]].concat(Object.keys(s.series.disconnects).map((code) => [code, "code " + code]))
            .map(([k, name]) => ({ name, values: k === "slow" ? s.series.slow : s.series.disconnects[k] }))
          : c.series.map(([k, name]) => ({ name, values: s.series[k] }));
        CrierChart.draw(c.canvas, s.series.t, series);
        c.legend.replaceChildren(...series.map((x, i) => h("span", {}, h("span", { class: "swatch c" + (i % 6) }), x.name)));
      }
    });
  }

  // Channels: search, counts, presence, history and a live tail.
  function channels() {
    const pattern = h("input", { type: "search", id: "channel-pattern", placeholder: "pattern, e.g. chat:*", "aria-label": "Channel pattern" });
    const list = h("div", { id: "channel-list" });
    const detail = h("section", { class: "card wide", id: "channel-detail", hidden: true });
    main.replaceChildren(h("h1", {}, "Channels"),
      h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); refresh(); } }, pattern, h("button", { type: "submit" }, "Search")),
      h("div", { class: "grid" }, h("section", { class: "card wide" }, list), detail));
    async function refresh() {
      const r = await api("channels", { pattern: pattern.value.trim() });
      if (r.error) { list.replaceChildren(h("p", { class: "bad-text" }, r.error.message)); return; }
      const names = Object.keys(r.result.channels || {}).sort();
      list.replaceChildren(table(["Channel", { label: "Subscribers", num: true }, ""],
        names.map((c) => [h("span", { class: "mono" }, c), num(r.result.channels[c].num_clients),
          h("button", { type: "button", class: "secondary", onclick: () => open(c) }, "Open")]),
        "No channel has subscribers" + (pattern.value ? " matching this pattern." : ".")));
    }
    function open(channel) {
      for (const f of cleanup) f();
      cleanup = [];
      detail.hidden = false;
      const presence = h("div", { id: "presence" }), history = h("div", { id: "history" });
      const tailRows = h("tbody", { id: "tail-rows" });
      const tailState = h("span", { class: "muted", id: "tail-state" }, "connecting…");
      detail.replaceChildren(h("h2", {}, "Channel ", h("span", { class: "mono" }, channel)),
        h("div", { class: "grid" },
          h("div", {}, h("h2", {}, "Presence"), presence),
          h("div", {}, h("h2", {}, "History"), history),
          h("div", { class: "wide" }, h("h2", {}, "Live tail ", tailState),
            h("div", { class: "tail scroll" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Offset"), h("th", {}, "Data"))), tailRows)))));
      api("presence", { channel }).then((r) => presence.replaceChildren(r.error
        ? h("p", { class: "muted" }, r.error.code === 108 ? "Presence is off for this channel." : r.error.message)
        : table(["Client", "User"], Object.values(r.result.presence).map((p) => [p.client, p.user]), "Nobody.")));
      loadHistory(channel, history, null);
      const es = new EventSource(base + "admin/tail?channel=" + encodeURIComponent(channel) + (token ? "&token=" + encodeURIComponent(token) : ""));
      es.onopen = () => { tailState.textContent = "live"; };
      es.onerror = () => { tailState.textContent = "reconnecting…"; };
      es.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        tailRows.prepend(h("tr", {}, h("td", { class: "num" }, m.pub.offset == null ? "–" : m.pub.offset), h("td", { class: "mono" }, JSON.stringify(m.pub.data))));
        while (tailRows.children.length > 200) tailRows.lastChild.remove();
      };
      cleanup.push(() => es.close());
    }
    async function loadHistory(channel, el, since) {
      const params = { channel, limit: 10, reverse: true };
      if (since) params.since = since;
      const r = await api("history", params);
      if (r.error) { el.replaceChildren(h("p", { class: "muted" }, r.error.code === 108 ? "History is off for this channel." : r.error.message)); return; }
      const pubs = r.result.publications || [];
      const oldest = pubs.length ? pubs[pubs.length - 1].offset : null;
      el.replaceChildren(table([{ label: "Offset", num: true }, "Data"], pubs.map((p) => [p.offset, h("span", { class: "mono" }, JSON.stringify(p.data))]), "No publications kept."),
        h("p", { class: "muted" }, "Epoch " + (r.result.epoch || "–") + ", last offset " + (r.result.offset ?? "–")),
        h("div", { class: "row" },
          since ? h("button", { type: "button", class: "secondary", onclick: () => loadHistory(channel, el, null) }, "Newest") : null,
          pubs.length === 10 && oldest > 1 ? h("button", { type: "button", class: "secondary", onclick: () => loadHistory(channel, el, { offset: oldest, epoch: r.result.epoch }) }, "Older") : null));
    }
    stopRefresh = every(2000, refresh);
  }

  // Connections: by user, with their subscriptions; disconnect, unsubscribe.
  function connections() {
    const user = h("input", { type: "search", id: "user-filter", placeholder: "user id (empty: everyone)", "aria-label": "User" });
    const list = h("div", { id: "connection-list" });
    const outcome = h("p", { id: "connection-outcome", role: "status" });
    const act = async (what, params) => {
      const r = await api(what, params);
      outcome.className = r.error ? "bad-text" : "ok-text";
      outcome.textContent = r.error ? what + " failed: " + r.error.message : what + " done.";
      refresh();
    };
    const disconnectUser = h("button", { type: "button", class: "danger", id: "disconnect-user",
      onclick: () => user.value.trim() && act("disconnect", { user: user.value.trim(), disconnect: { code: 3503, reason: "disconnected by an operator" } }) }, "Disconnect this user");
    main.replaceChildren(h("h1", {}, "Connections"),
      h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); refresh(); } }, user, h("button", { type: "submit" }, "Show"), disconnectUser),
      outcome, h("section", { class: "card" }, list));
    async function refresh() {
      const q = new URLSearchParams({ user: user.value.trim(), limit: "200" });
      const r = await request("admin/connections?" + q);
      list.replaceChildren(h("p", { class: "muted", id: "connection-total" }, "This node (" + r.node + ") holds " + num(r.total) + " connection(s)" + (r.connections.length < r.total ? "; the oldest " + r.connections.length + " shown." : ".")),
        table(["Client", "User", "Subscriptions", { label: "Queued", num: true }, ""],
          r.connections.map((c) => [h("span", { class: "mono" }, c.client), c.user || h("span", { class: "muted" }, "(anonymous)"),
            h("span", {}, c.channels.map((ch) => h("span", { class: "tag" }, ch, " ",
              h("button", { type: "button", class: "link-dark", "aria-label": "Unsubscribe " + c.client + " from " + ch, title: "Unsubscribe", onclick: () => act("unsubscribe", { user: c.user, client: c.client, channel: ch }) }, "×")))),
            num(c.queued),
            h("button", { type: "button", class: "danger", "data-client": c.client, onclick: () => act("disconnect", { user: c.user, client: c.client, disconnect: { code: 3503, reason: "disconnected by an operator" } }) }, "Disconnect")]),
          "No connections."));
    }
    stopRefresh = every(1000, refresh);
  }

  // Actions: every server API method as a form.
  const METHODS = {
    publish: [["channel", "text", "chat:index"], ["data", "json", '{"text": "hello"}'], ["skip_history", "bool"], ["idempotency_key", "text"]],
    broadcast: [["channels", "list", "chat:a, chat:b"], ["data", "json", '{"text": "hello"}'], ["skip_history", "bool"]],
    subscribe: [["user", "text"], ["client", "text"], ["channel", "text"]],
    unsubscribe: [["user", "text"], ["client", "text"], ["channel", "text"]],
    disconnect: [["user", "text"], ["client", "text"], ["disconnect", "json", '{"code": 3503, "reason": "disconnected by an operator"}']],
    refresh: [["user", "text"], ["client", "text"], ["expired", "bool"]],
    presence: [["channel", "text"]],
    presence_stats: [["channel", "text"]],
    history: [["channel", "text"], ["limit", "number", "10"], ["reverse", "bool"]],
    history_remove: [["channel", "text"]],
    channels: [["pattern", "text"]],
    info: [],
  };
  function actions() {
    const method = h("select", { id: "method", "aria-label": "Method" }, Object.keys(METHODS).map((m) => h("option", { value: m }, m)));
    const fields = h("div", { class: "form", id: "fields" });
    const answer = h("pre", { id: "answer", tabindex: "0", "aria-label": "Answer" }, "The answer appears here.");
    const form = h("form", { class: "form", id: "action-form" },
      h("label", {}, "Method", method), fields, h("button", { type: "submit", id: "call" }, "Call"));
    function build() {
      fields.replaceChildren(...METHODS[method.value].map(([name, kind, example]) => kind === "bool"
        ? h("label", { class: "check" }, h("input", { type: "checkbox", name }), name)
        : h("label", {}, name + (kind === "json" ? " (JSON)" : kind === "list" ? " (comma-separated)" : ""),
          kind === "json" ? h("textarea", { name, rows: 3, value: example || "" }) : h("input", { type: kind === "number" ? "number" : "text", name, placeholder: example || "" }))));
    }
    method.addEventListener("change", build);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const params = {};
      try {
        for (const [name, kind] of METHODS[method.value]) {
          const el = form.elements[name];
          if (kind === "bool") { if (el.checked) params[name] = true; continue; }
          const v = el.value.trim();
          if (!v) continue;
          params[name] = kind === "json" ? JSON.parse(v) : kind === "number" ? Number(v) : kind === "list" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
        }
      } catch (e) {
        answer.textContent = "Not valid JSON: " + e.message;
        return;
      }
      try {
        answer.textContent = JSON.stringify(await api(method.value, params), null, 2);
      } catch (e) {
        if (!(e instanceof Unauthorized)) answer.textContent = "Failed: " + e.message;
      }
    });
    build();
    main.replaceChildren(h("h1", {}, "Actions"), h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Call a server API method"), form),
      h("section", { class: "card" }, h("h2", {}, "Answer"), answer)));
  }

  // Configuration: what the node runs with, secrets masked.
  function config() {
    const filter = h("input", { type: "search", id: "config-filter", placeholder: "filter keys, e.g. client", "aria-label": "Filter" });
    const out = h("pre", { id: "config", tabindex: "0" }, "Loading…");
    let conf = null;
    const show = () => {
      const f = filter.value.trim();
      const pick = f && conf ? Object.fromEntries(Object.entries(conf).filter(([k]) => k.includes(f))) : conf;
      out.textContent = JSON.stringify(pick, null, 2);
    };
    filter.addEventListener("input", show);
    main.replaceChildren(h("h1", {}, "Configuration"),
      h("p", { class: "muted" }, "The configuration this node runs with (file, environment and command line applied). Secrets are shown as ********."),
      h("div", { class: "row" }, filter), out);
    request("admin/config").then((c) => { conf = c; show(); }).catch((e) => { if (!(e instanceof Unauthorized)) out.textContent = "Failed: " + e.message; });
  }

  // ---- start --------------------------------------------------------------
  async function start() {
    let init;
    try {
      init = await request("admin/init");
    } catch (e) {
      if (!(e instanceof Unauthorized)) setTimeout(start, 1000);
      return;
    }
    insecure = init.insecure;
    document.getElementById("insecure").hidden = !insecure;
    if (!init.authenticated) { showLogin(""); return; }
    document.getElementById("nav").hidden = false;
    document.getElementById("logout").hidden = insecure;
    route();
  }
  document.getElementById("logout").addEventListener("click", () => {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Logged out.");
  });
  window.addEventListener("hashchange", () => { if (!document.getElementById("nav").hidden) route(); });
  start();
})();
