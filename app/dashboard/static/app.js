// gatebot dashboard: reads the operator API (token from the URL fragment, never sent as part of a URL it
// loads), draws each instance's candles, trades and stop, pushes updates from /api/events, and sends the
// control commands after a confirmation. Plain script, no build step, nothing fetched from elsewhere.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token")
  || new URLSearchParams(location.search).get("token") || "";
const $ = (sel) => document.querySelector(sel);
const cards = new Map();  // instance name -> {el, chart, series, stopLine, equity, drawdown}
let readOnly = true;
let lastSnapshot = [];
let applying = Promise.resolve();

async function api(path, options = {}) {
  const resp = await fetch(path, {...options, headers: {"Authorization": `Bearer ${token}`,
                                                        "Content-Type": "application/json"}});
  const body = await resp.json().catch(() => ({error: `HTTP ${resp.status}`}));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

function say(text, error = false) {
  const el = $("#message");
  el.textContent = text;
  el.className = error ? "error" : "";
}

const sec = (ms) => Math.floor(ms / 1000);
// Decimals arrive as strings, exact; one written with an exponent (Decimal's 1.0000E+5) is shown plainly.
const fmt = (v) => (v === null || v === undefined) ? "-" : /e/i.test(String(v)) ? String(Number(v)) : String(v);
const signClass = (v) => (v === null || v === undefined) ? "" : Number(v) >= 0 ? "pos" : "neg";

function cell(text, cls = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

const COMMANDS = {close: "Close", pause: "Pause", resume: "Resume", halt: "Halt"};

function renderTable(instances) {
  const body = $("#instances tbody");
  body.replaceChildren();
  for (const inst of instances) {
    const p = inst.position;
    const tr = document.createElement("tr");
    tr.dataset.instance = inst.name;
    tr.append(cell(inst.name, "text"), cell(inst.symbol, "text"), cell(inst.position_state, "text position-state"),
              cell(inst.trading_state, "text trading-state"), cell(p ? p.side : "-", p ? `text ${p.side}` : "text"),
              cell(p ? fmt(p.qty) : "-", "qty"), cell(p ? fmt(p.entry_price) : "-", "entry"),
              cell(p ? fmt(p.mark_price) : "-", "mark"),
              cell(p ? fmt(p.unrealized_pnl) : "-", `upnl ${p ? signClass(p.unrealized_pnl) : ""}`),
              cell(p && p.stop ? fmt(p.stop.price) : "-", "stop"), cell(fmt(inst.balance), "balance"));
    if (p && p.stop) tr.querySelector("td.stop").title = `stop order ${p.stop.client_id} (on the exchange)`;
    const controls = document.createElement("td");
    for (const [command, label] of Object.entries(COMMANDS)) {
      const b = document.createElement("button");
      b.textContent = label;
      b.dataset.command = command;
      b.dataset.instance = inst.name;
      b.disabled = readOnly;
      if (command === "close" || command === "halt") b.className = "danger";
      controls.append(b);
    }
    tr.append(controls);
    body.append(tr);
  }
}

function card(name) {
  if (cards.has(name)) return cards.get(name);
  const el = document.createElement("section");
  el.className = "card";
  el.dataset.instance = name;
  el.innerHTML = `<h2></h2><div class="chart"></div><div class="equity"></div><ol class="log"></ol>`;
  el.querySelector("h2").textContent = name;
  $("#cards").append(el);
  const chart = LightweightCharts.createChart(el.querySelector(".chart"), {
    autoSize: true, timeScale: {timeVisible: true}, layout: {attributionLogo: true}});
  const eq = LightweightCharts.createChart(el.querySelector(".equity"), {
    autoSize: true, timeScale: {timeVisible: true}, layout: {attributionLogo: false}});
  const c = {el, chart, series: null, stopLine: null, eq,
             equity: eq.addLineSeries({color: "#1565c0", lineWidth: 2, title: "equity"}),
             drawdown: eq.addHistogramSeries({color: "rgba(229,57,53,.45)", priceScaleId: "dd", title: "drawdown %"})};
  eq.priceScale("dd").applyOptions({scaleMargins: {top: 0.7, bottom: 0}});
  cards.set(name, c);
  return c;
}

// One point per second at most (the chart wants strictly increasing times): the last one of a second wins.
function byTime(points) {
  const out = new Map();
  for (const p of points) out.set(p.time, p);
  return [...out.values()].sort((a, b) => a.time - b.time);
}

// A fill's marker sits on the candle it happened in (the last one opened at or before it).
function markerTime(ms, candleTimes) {
  let t = candleTimes.length ? candleTimes[0] : sec(ms);
  for (const c of candleTimes) { if (c <= sec(ms)) t = c; else break; }
  return candleTimes.length ? t : sec(ms);
}

const MARKER = {
  entry: (side) => ({position: side === "long" ? "belowBar" : "aboveBar", shape: side === "long" ? "arrowUp" : "arrowDown",
                     color: "#2e7d32", text: `entry ${side}`}),
  exit: () => ({position: "aboveBar", shape: "circle", color: "#6a1b9a", text: "exit"}),
  stop: () => ({position: "aboveBar", shape: "square", color: "#c62828", text: "stop"}),
};

async function loadDetail(name) {
  const q = encodeURIComponent(name);
  const [candles, trades, equity, transitions] = await Promise.all([
    api(`/api/instances/${q}/candles?limit=500`), api(`/api/instances/${q}/trades`),
    api(`/api/instances/${q}/equity`), api(`/api/instances/${q}/transitions?limit=50`)]);
  const c = card(name);
  if (!c.series) {
    c.series = candles.length ? c.chart.addCandlestickSeries() : c.chart.addLineSeries({color: "#455a64"});
  }
  let times = [];
  if (candles.length) {
    const data = byTime(candles.map((k) => ({time: sec(k.time_ms), open: +k.open, high: +k.high, low: +k.low,
                                              close: +k.close})));
    c.series.setData(data);
    times = data.map((d) => d.time);
  } else {  // no candles (the read-only dashboard): the line of the trades' prices
    c.series.setData(byTime(trades.map((t) => ({time: sec(t.time_ms), value: +t.price}))));
  }
  const markers = trades.map((t) => ({time: markerTime(t.time_ms, times), ...MARKER[t.kind](t.side)}))
    .sort((a, b) => a.time - b.time);
  c.series.setMarkers(markers);
  c.el.dataset.candles = String(candles.length);
  c.el.dataset.markers = String(markers.length);
  c.el.dataset.equity = String(equity.length);
  c.equity.setData(byTime(equity.map((e) => ({time: sec(e.time_ms), value: +e.equity}))));
  // drawdown is a share of the peak (0.0123 = 1.23 %), drawn below zero
  c.drawdown.setData(byTime(equity.map((e) => ({time: sec(e.time_ms), value: -100 * Number(e.drawdown)}))));
  c.chart.timeScale().fitContent();
  c.eq.timeScale().fitContent();
  const log = c.el.querySelector(".log");
  log.replaceChildren(...transitions.slice().reverse().map((t) => {
    const li = document.createElement("li");
    li.textContent = `${new Date(t.time_ms).toISOString().replace("T", " ").slice(0, 19)}  ${t.from} --${t.trigger}--> ${t.to}`;
    return li;
  }));
}

function showStop(inst) {
  const c = cards.get(inst.name);
  if (!c || !c.series) return;
  const stop = inst.position && inst.position.stop;
  const price = stop ? Number(stop.price) : null;
  if (c.stopLine && c.stopLine.options().price === price) return;
  if (c.stopLine) { c.series.removePriceLine(c.stopLine); c.stopLine = null; }
  if (price !== null) {
    c.stopLine = c.series.createPriceLine({price, color: "#c62828", lineWidth: 1, lineStyle: 2, title: "stop"});
  }
  c.el.dataset.stop = price === null ? "" : String(price);
}

// What makes a card's history worth reloading: the position moved, or a fill or transition happened.
const shape = (inst) => JSON.stringify([inst.position_state, inst.trading_state, inst.position && inst.position.qty,
                                        inst.realized_pnl, inst.fees]);

async function apply(instances) {
  const before = new Map(lastSnapshot.map((i) => [i.name, shape(i)]));
  lastSnapshot = instances;
  renderTable(instances);
  for (const inst of instances) {
    if (before.get(inst.name) !== shape(inst) || !cards.has(inst.name)) {
      try { await loadDetail(inst.name); } catch (e) { say(`${inst.name}: ${e.message}`, true); }
    }
    showStop(inst);
  }
  document.body.dataset.ready = "1";
}

function listen() {
  const live = $("#live");
  const source = new EventSource(`/api/events?token=${encodeURIComponent(token)}`);
  source.addEventListener("open", () => {  // again after a reconnect: the bot may have stopped (or started)
    live.textContent = "live";
    live.className = "badge ok";
    api("/api/health").then(showMode, () => {});
  });
  source.addEventListener("error", () => { live.textContent = "disconnected"; live.className = "badge off"; });
  // one snapshot applied at a time (a card's reload awaits the API): a later one waits for the one before
  source.addEventListener("snapshot", (ev) => { applying = applying.then(() => apply(JSON.parse(ev.data))); });
}

// The confirmation step: every control names what it will do and asks for a reason before it is sent.
let pending = null;
function ask(command, instance) {
  pending = {command, instance};
  $("#confirm-text").textContent = command === "flatten"
    ? "Flatten: close every instance's position now?"
    : `${COMMANDS[command]} ${instance}?`;
  $("#confirm").hidden = false;
  $("#confirm-ok").focus();
}

async function confirmed(ev) {
  ev.preventDefault();
  const {command, instance} = pending;
  pending = null;
  $("#confirm").hidden = true;
  const body = JSON.stringify({reason: $("#confirm-reason").value});
  try {
    if (command === "flatten") {
      const r = await api("/api/flatten", {method: "POST", body});
      say(Object.entries(r.results).map(([n, x]) => `${n}: ${x.ok ? x.message : x.error}`).join("; "));
    } else {
      const r = await api(`/api/instances/${encodeURIComponent(instance)}/${command}`, {method: "POST", body});
      say(r.message);
    }
  } catch (e) {
    say(`${instance || "flatten"}: ${e.message}`, true);
  }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-command]");
  if (b && !b.disabled) ask(b.dataset.command, b.dataset.instance);
});
$("#confirm-cancel").addEventListener("click", () => { pending = null; $("#confirm").hidden = true; say("cancelled"); });
$("#confirm-form").addEventListener("submit", confirmed);

function showMode(health) {
  readOnly = health.read_only;
  $("#mode").textContent = readOnly ? "read-only (bot not running)" : "bot running";
  for (const b of document.querySelectorAll("button[data-command]")) b.disabled = readOnly;
}

async function start() {
  if (!token) { say("no token: open the URL the bot printed (it ends in #token=...)", true); return; }
  try {
    showMode(await api("/api/health"));
    await apply(await api("/api/instances"));
  } catch (e) {
    say(e.message, true);
    return;
  }
  listen();
}
start();
