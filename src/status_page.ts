/**
 * The status page served at `/` by the operations server: one self-contained HTML document (inline CSS and
 * JS, no external resources), kept as a string so `deno compile` embeds it with no extra flags.
 *
 * At the top: the server's version, node id and UDP listen address. It polls `/health`, `/api/stats`,
 * `/peers`, `/api/events` and `/api/history` every second; the traffic chart (datagrams/s and bytes/s of the
 * last five minutes) is drawn from the server's own history, so it is full as soon as the page opens. All
 * times are UTC, as in the logs. The peers table fits 1280 px without cutting a column (it scrolls
 * sideways on narrower screens). With a token configured, open it as `/#token=<token>`.
 *
 * @module
 */

/** The status page document. */
export const STATUS_PAGE_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>p2p_server status</title>
<style>
  :root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f6f7f9; --card: #fff;
    --line: #d0d5dd; --a: #2563eb; --b: #d97706; --ok: #16a34a; --bad: #dc2626; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e4e7ec; --muted: #98a2b3; --bg: #101418; --card: #1a2027;
    --line: #344054; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: 1rem 1.5rem 0.75rem; }
  .title { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
  h1 { font-size: 1.2rem; margin: 0; }
  .ident { display: flex; gap: 1.5rem; flex-wrap: wrap; margin-top: 0.35rem; color: var(--muted); }
  .ident b { color: var(--fg); font-weight: 600; }
  h2 { font-size: 0.95rem; margin: 0 0 0.5rem; color: var(--muted); font-weight: 600; }
  #status { font-weight: 600; }
  #status.ok { color: var(--ok); } #status.bad { color: var(--bad); }
  main { display: grid; gap: 1rem; padding: 0 1.5rem 1.5rem; grid-template-columns: 1fr; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem; min-width: 0; }
  .tiles { display: flex; gap: 1.5rem; flex-wrap: wrap; }
  .tile b { display: block; font-size: 1.5rem; }
  .tile span { color: var(--muted); }
  canvas { width: 100%; height: 220px; display: block; }
  .legend span { margin-right: 1rem; } .legend i { display: inline-block; width: 12px; height: 3px; vertical-align: middle; margin-right: 4px; }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
  th { color: var(--muted); font-weight: 600; }
  #events { max-height: 320px; overflow: auto; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <div class="title"><h1 id="version">p2p_server</h1><span id="status">connecting...</span>
    <span id="uptime" class="muted"></span><span id="error" class="muted"></span></div>
  <div class="ident"><span>node id <b id="node-id" class="mono">-</b></span>
    <span>listening on <b id="listen" class="mono">-</b> (UDP)</span>
    <span id="key-wrap">public key <b id="public-key" class="mono">-</b></span>
    <span>server time <b id="clock">-</b></span></div>
</header>
<main>
  <section><h2>Now</h2><div class="tiles">
    <div class="tile"><b id="t-auth">-</b><span>authenticated peers</span></div>
    <div class="tile"><b id="t-hs">-</b><span>handshaking</span></div>
    <div class="tile"><b id="t-dps">-</b><span>datagrams/s (in + out)</span></div>
    <div class="tile"><b id="t-bps">-</b><span>bytes/s (in + out)</span></div>
    <div class="tile"><b id="t-refused">-</b><span>handshakes refused</span></div>
    <div class="tile"><b id="t-drops">-</b><span>dropped (total)</span></div>
    <div class="tile"><b id="t-rtt">-</b><span>smoothed RTT</span></div>
  </div></section>
  <section><h2>Traffic, last 5 minutes (UTC)</h2>
    <div class="legend"><span><i style="background:var(--a)"></i>datagrams/s</span><span><i style="background:var(--b)"></i>bytes/s (right axis)</span></div>
    <canvas id="chart" width="900" height="220"></canvas></section>
  <section><h2>Peers</h2><div id="states" class="muted">-</div>
    <div class="scroll"><table id="peer-table"><thead><tr><th>name</th><th>node id</th><th>endpoint</th><th>NAT</th>
    <th>keyed</th><th>state</th><th class="num">handshake</th><th class="num">last seen</th><th class="num">RTT</th>
    <th class="num">in</th><th class="num">out</th></tr></thead>
    <tbody id="peers"></tbody></table></div><div id="peers-more" class="muted"></div></section>
  <section><h2>Recent events</h2><div id="events" class="scroll"><table><thead><tr><th>time (UTC)</th><th>event</th>
    <th>addr</th><th>detail</th></tr></thead><tbody id="event-rows"></tbody></table></div></section>
</main>
<script>
"use strict";
(function () {
  var token = new URLSearchParams(location.hash.slice(1)).get("token");
  var headers = token ? { Authorization: "Bearer " + token } : {};
  var WINDOW_S = 300;
  var history = []; // cumulative counters from /api/history: { time, datagrams_in, ... }
  var $ = function (id) { return document.getElementById(id); };
  function getJson(path) {
    return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    });
  }
  function fmt(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n * 10) / 10);
  }
  function bytes(n) {
    if (n === null || n === undefined) return "-";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return (u === 0 ? String(n) : n.toFixed(1)) + " " + units[u];
  }
  function age(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h ago";
  }
  function text(el, value) { el.textContent = value; }
  function cell(row, value, cls, title) {
    var td = document.createElement("td"); td.textContent = value; td.title = title || value;
    if (cls) td.className = cls; row.appendChild(td);
  }
  /** UTC, as the logs write it: 2026-01-02 03:04:05. */
  function utc(ms) { return new Date(ms).toISOString().slice(0, 19).replace("T", " "); }

  function rates() {
    var out = [];
    for (var i = 1; i < history.length; i++) {
      var a = history[i - 1], b = history[i], dt = (b.time - a.time) / 1000;
      if (dt <= 0) continue;
      out.push({
        t: b.time,
        dps: Math.max(0, (b.datagrams_in + b.datagrams_out - a.datagrams_in - a.datagrams_out) / dt),
        bps: Math.max(0, (b.bytes_in + b.bytes_out - a.bytes_in - a.bytes_out) / dt),
      });
    }
    return out;
  }

  function onHistory(body) {
    body.samples.forEach(function (s) { history.push(s); });
    while (history.length && history[0].time < body.server_time - (WINDOW_S + 2) * 1000) history.shift();
    var samples = rates(), last = samples[samples.length - 1];
    if (last) { text($("t-dps"), fmt(last.dps)); text($("t-bps"), fmt(last.bps)); }
    draw(body.server_time, samples);
  }

  function onStats(body) {
    var s = body.stats, info = body.server;
    if (info) {
      text($("version"), info.name + " " + info.version);
      document.title = info.name + " " + info.version + " status";
      text($("node-id"), info.node_id);
      text($("listen"), info.listen_addr);
      if (info.public_key) text($("public-key"), info.public_key); else $("key-wrap").hidden = true;
    }
    text($("clock"), utc(body.server_time) + " UTC");
    text($("t-auth"), s.peers.authenticated);
    text($("t-hs"), s.peers.handshaking);
    var refused = 0; Object.keys(s.handshakesFailed).forEach(function (k) { refused += s.handshakesFailed[k]; });
    text($("t-refused"), fmt(refused));
    text($("t-drops"), fmt(s.droppedTotal));
    text($("t-rtt"), s.rttMs ? s.rttMs.smoothed.toFixed(1) + " ms" : "-");
    text($("uptime"), "up " + age(s.uptimeSeconds).replace(" ago", ""));
  }

  function draw(now, samples) {
    var c = $("chart"), ctx = c.getContext("2d");
    var ratio = window.devicePixelRatio || 1, w = c.clientWidth || 900, h = c.clientHeight || 220;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var css = getComputedStyle(document.documentElement);
    var pad = { l: 48, r: 56, t: 10, b: 22 }, pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    var maxD = 1, maxB = 1;
    samples.forEach(function (p) { maxD = Math.max(maxD, p.dps); maxB = Math.max(maxB, p.bps); });
    ctx.strokeStyle = css.getPropertyValue("--line"); ctx.fillStyle = css.getPropertyValue("--muted");
    ctx.lineWidth = 1; ctx.font = "11px system-ui, sans-serif";
    for (var i = 0; i <= 4; i++) {
      var y = pad.t + ph - (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText(fmt((maxD * i) / 4), pad.l - 6, y + 4);
      ctx.textAlign = "left"; ctx.fillText(fmt((maxB * i) / 4), pad.l + pw + 6, y + 4);
    }
    ctx.textAlign = "center";
    for (var m = 0; m <= 5; m++) {
      ctx.fillText(m === 0 ? "now" : utc(now - m * 60000).slice(11, 16), pad.l + pw - (pw * m) / 5, h - 6);
    }
    function line(key, max, color) {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      samples.forEach(function (p, k) {
        var x = pad.l + pw - (pw * (now - p.t)) / (WINDOW_S * 1000), yy = pad.t + ph - (ph * p[key]) / max;
        if (k === 0) ctx.moveTo(x, yy); else ctx.lineTo(x, yy);
      });
      ctx.stroke();
    }
    line("dps", maxD, css.getPropertyValue("--a"));
    line("bps", maxB, css.getPropertyValue("--b"));
    c.dataset.samples = String(samples.length);
    if (c.dataset.firstSamples === undefined) c.dataset.firstSamples = String(samples.length);
  }

  function onPeers(body) {
    var tbody = $("peers"), counts = {};
    tbody.textContent = "";
    body.peers.forEach(function (p) {
      counts[p.state] = (counts[p.state] || 0) + 1;
      var row = document.createElement("tr");
      cell(row, p.name, "", p.name + " " + p.version + " (network " + p.network + ")");
      cell(row, p.id, "mono");
      cell(row, p.addr, "mono", "observed " + p.addr + ", declared " + p.listen_addr);
      cell(row, p.behind_nat ? "yes" : "no", "", "declared " + p.listen_addr);
      cell(row, p.keyed ? "yes" : "no");
      cell(row, p.state);
      cell(row, age(p.handshake_age_seconds), "num", utc(p.joined_at * 1000) + " UTC");
      cell(row, age(p.last_seen_age_seconds), "num", utc(p.last_seen * 1000) + " UTC");
      cell(row, p.rtt_ms === null ? "-" : p.rtt_ms.toFixed(1) + " ms", "num");
      cell(row, bytes(p.bytes_in), "num", p.datagrams_in === null ? "" : p.datagrams_in + " datagrams");
      cell(row, bytes(p.bytes_out), "num", p.datagrams_out === null ? "" : p.datagrams_out + " datagrams");
      tbody.appendChild(row);
    });
    text($("states"), Object.keys(counts).length ? Object.keys(counts).map(function (k) { return k + ": " + counts[k]; }).join(", ") : "no peers");
    text($("peers-more"), body.next_offset === null ? "" : "showing " + body.peers.length + " of " + body.total);
  }

  function onEvents(body) {
    var tbody = $("event-rows");
    tbody.textContent = "";
    body.events.slice().reverse().forEach(function (e) {
      var row = document.createElement("tr");
      var detail = (e.detail || "") + (e.count > 1 ? " (x" + e.count + ")" : "") + (e.id ? " " + e.id : "");
      [utc(e.time), e.type, e.addr, detail].forEach(function (v) { cell(row, v); });
      tbody.appendChild(row);
    });
  }

  function tick() {
    var since = history.length ? history[history.length - 1].time : 0;
    Promise.all([getJson("/health"), getJson("/api/stats"), getJson("/peers?limit=100"), getJson("/api/events"),
      getJson("/api/history?since=" + since)])
      .then(function (r) {
        var health = r[0];
        $("status").className = health.status === 200 ? "ok" : "bad";
        text($("status"), health.body.status);
        if (r[1].status === 401) { text($("error"), "unauthorized: open this page as /#token=<token>"); return; }
        text($("error"), "");
        if (r[1].status === 200) onStats(r[1].body);
        if (r[2].status === 200) onPeers(r[2].body);
        if (r[3].status === 200) onEvents(r[3].body);
        if (r[4].status === 200) onHistory(r[4].body);
      })
      .catch(function (err) { $("status").className = "bad"; text($("status"), "unreachable"); text($("error"), String(err)); })
      .finally(function () { setTimeout(tick, 1000); });
  }
  tick();
})();
</script>
</body>
</html>
`;
