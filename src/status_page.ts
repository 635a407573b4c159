/**
 * The status page served at `/` by the operations server: one self-contained HTML document (inline CSS and
 * JS, no external resources), kept as a string so `deno compile` embeds it with no extra flags.
 *
 * It polls `/health`, `/peers`, `/api/stats` and `/api/events` every second, and draws datagrams/s and
 * bytes/s of the last five minutes on a canvas. With a token configured, open it as `/#token=<token>`.
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
  header { display: flex; gap: 1rem; align-items: baseline; padding: 1rem 1.5rem; }
  h1 { font-size: 1.2rem; margin: 0; }
  h2 { font-size: 0.95rem; margin: 0 0 0.5rem; color: var(--muted); font-weight: 600; }
  #status { font-weight: 600; }
  #status.ok { color: var(--ok); } #status.bad { color: var(--bad); }
  main { display: grid; gap: 1rem; padding: 0 1.5rem 1.5rem; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem; min-width: 0; }
  .wide { grid-column: 1 / -1; }
  .tiles { display: flex; gap: 1.5rem; flex-wrap: wrap; }
  .tile b { display: block; font-size: 1.5rem; }
  .tile span { color: var(--muted); }
  canvas { width: 100%; height: 220px; display: block; }
  .legend span { margin-right: 1rem; } .legend i { display: inline-block; width: 12px; height: 3px; vertical-align: middle; margin-right: 4px; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 16rem; }
  th { color: var(--muted); font-weight: 600; }
  #events, .scroll { max-height: 320px; overflow: auto; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header><h1>p2p_server</h1><span id="status">connecting...</span><span id="uptime" class="muted"></span>
<span id="error" class="muted"></span></header>
<main>
  <section class="wide"><h2>Now</h2><div class="tiles">
    <div class="tile"><b id="t-auth">-</b><span>authenticated peers</span></div>
    <div class="tile"><b id="t-hs">-</b><span>handshaking</span></div>
    <div class="tile"><b id="t-dps">-</b><span>datagrams/s (in + out)</span></div>
    <div class="tile"><b id="t-bps">-</b><span>bytes/s (in + out)</span></div>
    <div class="tile"><b id="t-drops">-</b><span>dropped (total)</span></div>
    <div class="tile"><b id="t-rtt">-</b><span>smoothed RTT</span></div>
  </div></section>
  <section class="wide"><h2>Traffic, last 5 minutes</h2>
    <div class="legend"><span><i style="background:var(--a)"></i>datagrams/s</span><span><i style="background:var(--b)"></i>bytes/s (right axis)</span></div>
    <canvas id="chart" width="900" height="220"></canvas></section>
  <section><h2>Peers by state</h2><div id="states" class="muted">-</div>
    <div class="scroll"><table><thead><tr><th>name</th><th>id</th><th>addr</th><th>state</th><th>network</th><th>last seen</th></tr></thead>
    <tbody id="peers"></tbody></table></div><div id="peers-more" class="muted"></div></section>
  <section><h2>Recent events</h2><div id="events"><table><thead><tr><th>time</th><th>event</th><th>addr</th><th>detail</th></tr></thead>
    <tbody id="event-rows"></tbody></table></div></section>
</main>
<script>
"use strict";
(function () {
  var token = new URLSearchParams(location.hash.slice(1)).get("token");
  var headers = token ? { Authorization: "Bearer " + token } : {};
  var WINDOW_S = 300;
  var samples = []; // { t, dps, bps }
  var prev = null;
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
  function text(el, value) { el.textContent = value; }
  function cell(row, value) { var td = document.createElement("td"); td.textContent = value; td.title = value; row.appendChild(td); }
  function clockText(ms) { return new Date(ms).toLocaleTimeString(); }

  function onStats(body) {
    var s = body.stats, now = body.server_time;
    text($("t-auth"), s.peers.authenticated);
    text($("t-hs"), s.peers.handshaking);
    text($("t-drops"), fmt(s.droppedTotal));
    text($("t-rtt"), s.rttMs ? s.rttMs.smoothed.toFixed(1) + " ms" : "-");
    text($("uptime"), "up " + Math.floor(s.uptimeSeconds) + " s");
    var d = s.datagramsReceived + s.datagramsSent, b = s.bytesReceived + s.bytesSent;
    if (prev && now > prev.t) {
      var dt = (now - prev.t) / 1000;
      var sample = { t: now, dps: Math.max(0, (d - prev.d) / dt), bps: Math.max(0, (b - prev.b) / dt) };
      samples.push(sample);
      while (samples.length && samples[0].t < now - WINDOW_S * 1000) samples.shift();
      text($("t-dps"), fmt(sample.dps));
      text($("t-bps"), fmt(sample.bps));
    }
    prev = { t: now, d: d, b: b };
    draw(now);
  }

  function draw(now) {
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
    for (var m = 0; m <= 5; m++) ctx.fillText(m === 0 ? "now" : "-" + m + "m", pad.l + pw - (pw * m) / 5, h - 6);
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
  }

  function onPeers(body) {
    var tbody = $("peers"), counts = {};
    tbody.textContent = "";
    body.peers.forEach(function (p) {
      counts[p.state] = (counts[p.state] || 0) + 1;
      var row = document.createElement("tr");
      [p.name, p.id, p.addr, p.state, p.network, clockText(p.last_seen * 1000)].forEach(function (v) { cell(row, v); });
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
      [clockText(e.time), e.type, e.addr, detail].forEach(function (v) { cell(row, v); });
      tbody.appendChild(row);
    });
  }

  function tick() {
    Promise.all([getJson("/health"), getJson("/api/stats"), getJson("/peers?limit=100"), getJson("/api/events")])
      .then(function (r) {
        var health = r[0];
        $("status").className = health.status === 200 ? "ok" : "bad";
        text($("status"), health.body.status);
        if (r[1].status === 401) { text($("error"), "unauthorized: open this page as /#token=<token>"); return; }
        text($("error"), "");
        if (r[1].status === 200) onStats(r[1].body);
        if (r[2].status === 200) onPeers(r[2].body);
        if (r[3].status === 200) onEvents(r[3].body);
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
