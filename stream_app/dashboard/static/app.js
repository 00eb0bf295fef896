// The dashboard page: live feed (server-sent events), review queue, drift and health.
// Product text is only ever written with textContent: a title is data, never markup.
"use strict";

const MAX_CARDS = 200;
const TOKEN_KEY = "prodcat-review-token";
const state = { session: null, token: sessionStorage.getItem(TOKEN_KEY), tab: "feed" };
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// --- session and sign-in ------------------------------------------------------------------

function takeTokenFromLink() {
  // `prodcat demo --dashboard` prints a link ending in #token=...: the fragment never
  // reaches any server; keep it for this tab only and remove it from the address bar.
  const match = location.hash.match(/^#token=(.+)$/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function loadSession() {
  state.session = await getJSON("/api/session");
  const s = state.session;
  $("model").textContent = s.model && s.model.fingerprint ? `model ${s.model.fingerprint}` : "";
  if (state.token && !s.reviewer) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    $("token").setCustomValidity("token not accepted");
    $("token").reportValidity();
  }
  $("signin").classList.toggle("hidden", !s.can_review || !!s.reviewer);
  $("who").classList.toggle("hidden", !s.reviewer);
  $("readonly").classList.toggle("hidden", s.can_review);
  $("reviewer").textContent = s.reviewer ? `reviewing as ${s.reviewer}` : "";
  const labels = new Set(s.paths.flat());
  $("labels").replaceChildren(...[...labels].sort().map((l) => new Option(l, l)));
}

function signedIn() {
  return !!(state.session && state.session.reviewer);
}

// --- cards --------------------------------------------------------------------------------

function pathLabels(item) {
  return item.path.map((step) => step.label);
}

function fillPickers(box, levels, paths, chosen) {
  // One select per level, each offering only labels that continue the levels above it into
  // a path the model knows: a reviewer cannot invent a category.
  box.replaceChildren();
  const selects = levels.map((level) => {
    const label = document.createElement("label");
    label.textContent = level;
    const select = document.createElement("select");
    select.dataset.level = level;
    label.appendChild(select);
    box.appendChild(label);
    return select;
  });
  const refill = (from) => {
    for (let i = from; i < selects.length; i++) {
      const prefix = selects.slice(0, i).map((s) => s.value);
      const options = [...new Set(paths.filter((p) => prefix.every((v, j) => p[j] === v)).map((p) => p[i]))].sort();
      const keep = options.includes(selects[i].value) ? selects[i].value : options.includes(chosen[i]) ? chosen[i] : options[0];
      selects[i].replaceChildren(...options.map((o) => new Option(o, o)));
      selects[i].value = keep;
    }
  };
  selects.forEach((select, i) => select.addEventListener("change", () => refill(i + 1)));
  refill(0);
  return () => selects.map((s) => s.value);
}

function card(item, mode) {
  const li = $("card").content.firstElementChild.cloneNode(true);
  li.dataset.eventId = item.event_id;
  li.classList.toggle("review-needed", item.queue === "needs_review" || item.needs_review);
  li.classList.toggle("audit", item.queue === "audit");
  const img = li.querySelector("img");
  if (item.photo) {
    img.src = "/photo/" + encodeURIComponent(item.event_id);
    img.alt = "product photo";
  } else {
    img.remove();
    li.querySelector(".nophoto").textContent = item.photo_error || "no photo";
  }
  li.querySelector(".title").textContent = item.title ?? `product ${item.product_id} (not in memory)`;
  li.querySelector(".desc").textContent = item.description || "";
  const path = li.querySelector(".path");
  for (const step of item.path) {
    const chip = document.createElement("li");
    chip.textContent = step.label;
    chip.title = step.level;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = step.score.toFixed(2);
    chip.appendChild(score);
    chip.classList.toggle("low", step.score < 0.5);
    path.appendChild(chip);
  }
  const meta = li.querySelector(".meta");
  const badge = (text, cls) => {
    const b = document.createElement("span");
    b.className = "badge " + (cls || "");
    b.textContent = text;
    meta.appendChild(b);
  };
  if (item.needs_review) badge("needs review", "flag-review");
  if (item.queue === "audit") badge("audit sample", "flag-audit");
  if (item.decided_by) badge(item.decided_by === "text" ? "decided by text" : "decided by text + photo");
  meta.appendChild(document.createTextNode(
    `product ${item.product_id} · ${new Date(item.classified_at).toLocaleTimeString()}` +
    (item.latency_ms != null ? ` · ${item.latency_ms.toFixed(0)} ms in the worker` : "") +
    ` · model ${item.model.fingerprint}`));
  if (signedIn()) wireReview(li, item, mode);
  return li;
}

function wireReview(li, item, mode) {
  const area = li.querySelector(".review");
  const open = li.querySelector(".open-review");
  let labels = null;
  const show = () => {
    area.classList.remove("hidden");
    open.classList.add("hidden");
    labels = fillPickers(area.querySelector(".pickers"), state.session.levels, state.session.paths, pathLabels(item));
  };
  if (mode === "queue") show();
  else {
    open.classList.remove("hidden");
    open.addEventListener("click", show);
  }
  const send = async (chosen) => {
    const result = area.querySelector(".result");
    result.className = "result";
    result.textContent = "saving…";
    const response = await fetch("/api/decisions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ event_id: item.event_id, labels: chosen, comment: area.querySelector(".comment").value }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      result.textContent = body.decision === "accept" ? "accepted ✓" : `corrected to ${body.new_path.map((s) => s.label).join(" › ")} ✓`;
      area.querySelectorAll("button, select, input").forEach((el) => (el.disabled = true));
      li.dataset.decided = body.decision;
      if (mode === "queue") setTimeout(() => li.remove(), 3000);
    } else {
      result.classList.add("error");
      result.textContent = body.error || `refused (HTTP ${response.status})`;
    }
  };
  area.querySelector(".accept").addEventListener("click", () => send(pathLabels(item)));
  area.querySelector(".correct").addEventListener("click", () => send(labels()));
}

// --- live feed ----------------------------------------------------------------------------

function filters() {
  return { label: $("f-label").value.trim(), score: $("f-score").value, review: $("f-review").checked };
}

function matches(item, f) {
  if (f.review && !item.needs_review) return false;
  if (f.score !== "" && Math.min(...item.path.map((s) => s.score)) > Number(f.score)) return false;
  return !f.label || item.path.some((s) => s.label === f.label);
}

async function loadFeed() {
  const f = filters();
  const query = new URLSearchParams({ limit: MAX_CARDS });
  if (f.label) query.set("label", f.label);
  if (f.score !== "") query.set("max_score", f.score);
  if (f.review) query.set("needs_review", "1");
  const data = await getJSON("/api/feed?" + query);
  $("feed-list").replaceChildren(...data.items.map((item) => card(item, "feed")));
  showCount(data.total);
}

let feedTotal = 0;
function showCount(total) {
  feedTotal = total;
  $("feed-count").textContent = `${total} assignments in memory`;
}

function onAssignment(item) {
  showCount(feedTotal + 1); // the server's window is bounded; a reload gives the exact count
  if (!matches(item, filters())) return;
  const list = $("feed-list");
  const li = card(item, "feed");
  li.classList.add("fresh");
  list.prepend(li);
  while (list.children.length > MAX_CARDS) list.lastElementChild.remove();
}

function onUpdate(item) {
  for (const list of [$("feed-list"), $("queue-list")]) {
    const old = list.querySelector(`li[data-event-id="${CSS.escape(item.event_id)}"]`);
    if (old && !old.dataset.decided) old.replaceWith(card(item, list.id === "queue-list" ? "queue" : "feed"));
  }
}

// --- review queue -------------------------------------------------------------------------

async function loadQueue() {
  const data = await getJSON("/api/queue");
  const list = $("queue-list");
  const open = new Set([...list.querySelectorAll("li[data-decided]")].map((li) => li.dataset.eventId));
  const cards = data.items.filter((i) => !open.has(i.event_id)).map((item) => card(item, "queue"));
  list.replaceChildren(...list.querySelectorAll("li[data-decided]"), ...cards);
  $("backlog").textContent = data.backlog.needs_review + data.backlog.audit;
}

let queueTimer = null;
function refreshQueueSoon() {
  clearTimeout(queueTimer);
  queueTimer = setTimeout(() => loadQueue().catch(console.error), 300);
}

// --- drift and health ---------------------------------------------------------------------

function levelSelect(id, levels) {
  const select = $(id);
  if (select.options.length !== levels.length) {
    select.replaceChildren(...levels.map((l) => new Option(l, l)));
    select.value = levels[levels.length - 1];
  }
  return select.value;
}

async function loadStats() {
  const s = await getJSON("/api/stats");
  const series = s.workers.series;
  Charts.lines($("c-throughput"), [
    { name: "assigned/s", color: "#3b6fb6", points: series.map((p) => [p.at, p.assigned_per_s]) },
    { name: "dead letters/s", color: "#d9534f", points: series.map((p) => [p.at, p.dead_letters_per_s]) },
  ], { empty: "no worker metrics yet" });
  Charts.lines($("c-latency"), ["p50", "p95", "p99"].map((q, i) => ({
    name: q, color: ["#2e8b57", "#f0ad4e", "#d9534f"][i], points: series.map((p) => [p.at, p.latency_s[q]]),
  })), { empty: "no worker metrics yet" });
  const dlq = Object.entries(s.workers.dead_letters_by_stage).map(([stage, n]) => ({ label: stage, values: [n] }));
  Charts.bars($("c-dlq"), dlq, { colors: ["#d9534f"], empty: "no dead letters" });
  const drift = s.drift;
  const levels = Object.keys(drift.levels);
  Charts.bars($("c-psi"), levels.map((level) => {
    const psi = drift.levels[level].psi ?? 0;
    const color = psi > 0.25 ? "#d9534f" : psi > 0.1 ? "#f0ad4e" : "#2e8b57";
    const shown = drift.levels[level].psi === null ? "–" : Charts.fmt(psi);
    return { label: level, values: [psi, drift.levels[level].noise_floor ?? 0], colors: [color, "#c8cdd6"], shown };
  }), { names: ["PSI", "noise floor"], colors: ["#3b6fb6", "#c8cdd6"], max: 0.5 });
  $("psi-note").textContent = !drift.has_training ? "The model's training distribution is unknown: no drift score."
    : drift.window < drift.min_sample ? `Scores from ${drift.min_sample} assignments on (now ${drift.window}).`
    : `Last ${drift.window} assignments. Under 0.1 stable, 0.1–0.25 moderate, over 0.25 a shift worth a look.`;
  const distLevel = levelSelect("dist-level", levels);
  const classes = (drift.levels[distLevel] || { classes: [] }).classes;
  Charts.bars($("c-dist"), classes.map((c) => ({ label: c.label, values: [c.now, c.train] })),
    { names: ["now", "training"], labelWidth: 150 });
  const confLevel = levelSelect("conf-level", levels);
  const hist = drift.confidence[confLevel] || [];
  Charts.bars($("c-conf"), hist.map((n, i) => ({ label: `${(i / 10).toFixed(1)}–${((i + 1) / 10).toFixed(1)}`, values: [n] })),
    { colors: ["#3b6fb6"], labelWidth: 60 });
  const acc = s.accuracy;
  Charts.lines($("c-accuracy"), [
    { name: "all reviewed", color: "#3b6fb6", points: acc.series.map((p) => [p.at, p.accuracy]) },
    { name: "audit sample", color: "#f0ad4e", points: acc.series.map((p) => [p.at, p.audit_accuracy]) },
  ], { yMax: 1, empty: "no decisions yet" });
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
  $("accuracy-note").textContent = `Whole path right: ${pct(acc.all.path)} of ${acc.all.n} reviewed; ` +
    `${pct(acc.audit.path)} of ${acc.audit.n} audited (the unbiased estimate for confident assignments).`;
  const targets = Object.entries(s.workers.targets).map(([t, e]) => `${t}: ${e ? "down (" + e + ")" : "up"}`);
  $("workers").textContent = `Workers scraped: ${targets.join("; ") || "none"} · memory: ${s.memory.feed} feed, ` +
    `${s.memory.queue} queued, ${s.memory.pending_products} products awaiting assignment`;
}

// --- wiring -------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  const live = $("live");
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); loadFeed().catch(console.error); refreshQueueSoon(); };
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  source.addEventListener("assignment", (e) => onAssignment(JSON.parse(e.data)));
  source.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  source.addEventListener("queue", refreshQueueSoon);
  source.addEventListener("decision", refreshQueueSoon);
}

function showTab(tab) {
  state.tab = tab;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("hidden", p.id !== tab));
  if (tab === "health") loadStats().catch(console.error);
  if (tab === "queue") loadQueue().catch(console.error);
}

async function start() {
  takeTokenFromLink();
  await loadSession();
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $("filters").addEventListener("input", () => loadFeed().catch(console.error));
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = "";
    await loadSession();
    await Promise.all([loadFeed(), loadQueue()]);
  });
  $("token").addEventListener("input", () => $("token").setCustomValidity(""));
  $("signout").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    await loadSession();
    await Promise.all([loadFeed(), loadQueue()]);
  });
  connect();
  setInterval(() => { if (state.tab === "health") loadStats().catch(console.error); }, 3000);
  setInterval(refreshQueueSoon, 10000);
}

document.addEventListener("DOMContentLoaded", () => start().catch((e) => { $("live").textContent = String(e); }));
