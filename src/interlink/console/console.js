// The Interlink console. Everything shown comes from /console/api/*; every string from the
// mesh goes into the page through textContent (never innerHTML), so names, reasons and ids
// cannot become markup or script.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let token = null;
let feedAfter = 0;
const feedRows = [];

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = String(cell ?? "");
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

async function api(path, options) {
  const response = await fetch(path, {
    ...(options || {}),
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { showLogin(body.error ? body.error.reason : ""); throw new Error("login"); }
  if (!response.ok) throw new Error(body.error ? body.error.reason : response.statusText);
  return body;
}

function showLogin(reason) {
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = reason || "";
}

function crossing(span) {
  const a = span.attributes || {};
  const kind = a["interlink.kind"], sender = String(a["interlink.sender"] ?? "?");
  const target = String(a["interlink.target"] ?? "");
  if (kind === "call") {
    const [agent, ...skill] = target.split(".");
    return [sender, agent, `call ${skill.join(".")}`];
  }
  if (kind === "reply" || kind === "progress") return [sender, target, kind];
  if (kind === "publish") return [sender, `topic ${target}`, "publish"];
  if (kind === undefined) return ["?", "hub", span.name];
  return [sender, "hub", `${kind} ${target}`];
}

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function verdict(span) {
  const a = span.attributes || {};
  if (a["interlink.decision"] === "refused") {
    return el("span", `refused at ${a["interlink.stage"]} (${a["interlink.code"]})`, { class: "bad" });
  }
  return el("span", "accepted", { class: "ok" });
}

async function refreshOverview() {
  const o = await api("/console/api/overview");
  document.getElementById("hub").textContent = o.hub;
  drawGraph(o.agents, o.links);
  fill("held", o.held.map((h) => {
    const approve = el("button", "Approve", { "data-call": h.call, class: "approve" });
    const refuse = el("button", "Refuse", { "data-call": h.call, class: "refuse" });
    approve.addEventListener("click", () => decide(h.call, "approve"));
    refuse.addEventListener("click", () => decide(h.call, "refuse"));
    const both = el("span"); both.append(approve, " ", refuse);
    return row([h.call.slice(0, 12), h.caller, h.target, h.rule, `${Math.round(h.expires_in)}s`, both]);
  }));
  document.getElementById("held-empty").hidden = o.held.length > 0;
  fill("refused", o.refused.slice().reverse().map((s) => {
    const [from, to, what] = crossing(s);
    const a = s.attributes || {};
    return row([clock(s.start), `${from} → ${to}`, what,
                `${a["interlink.stage"]} (${a["interlink.code"]})`, a["interlink.rule"] || ""]);
  }));
  fill("topics", o.topics.map((t) => row([t.topic, t.events])));
  fill("consumers", o.consumers.map((c) => row([c.name, c.filter, c.lag, c.unacked, c.dead])));
  fill("memory", o.memory.map((m) => row([m.namespace, m.keys])));
  const audit = document.getElementById("audit");
  audit.textContent = (o.audit.verified ? "✓ verified: " : `✗ broken: ${o.audit.problem} — `)
    + `${o.audit.records} records, ${o.audit.unsealed} not yet sealed by a checkpoint`;
  audit.className = o.audit.verified ? "ok" : "bad";
}

function drawGraph(agents, links) {
  const graph = document.getElementById("graph");
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 28, refY: 5,
                                 markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#3a5bd9" }));
  defs.appendChild(marker);
  const nodes = [defs];
  const place = {};
  const n = Math.max(agents.length, 1);
  agents.forEach((agent, i) => {
    const angle = (2 * Math.PI * i) / n - Math.PI / 2;
    place[agent.name] = [400 + 300 * Math.cos(angle), 180 + 140 * Math.sin(angle)];
  });
  for (const link of links) {
    if (!place[link.from] || !place[link.to]) continue;
    const [x1, y1] = place[link.from], [x2, y2] = place[link.to];
    const line = svg("line", { x1, y1, x2, y2, class: link.refused ? "link failing" : "link" });
    line.appendChild(svg("title", {}, `${link.from} → ${link.to}: ${link.calls} calls, ${link.refused} refused`));
    nodes.push(line);
    nodes.push(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, "text-anchor": "middle" },
                   `${link.calls}${link.refused ? ` (${link.refused} refused)` : ""}`));
  }
  for (const agent of agents) {
    const [x, y] = place[agent.name];
    const state = agent.suspended ? "suspended" : agent.breaker === "open" ? "open"
      : agent.connected ? "online" : "offline";
    const g = svg("g", { class: `node ${state}`, "data-agent": agent.name });
    g.appendChild(svg("title", {}, `${agent.name}: ${agent.description || "no description"}; `
                                    + `skills ${agent.skills.join(", ") || "none"}`));
    g.appendChild(svg("circle", { cx: x, cy: y, r: 22 }));
    g.appendChild(svg("text", { x, y: y + 38, "text-anchor": "middle" }, agent.name));
    g.appendChild(svg("text", { x, y: y + 52, "text-anchor": "middle", class: "dim" },
                      state + (agent.breaker !== "closed" ? ` · breaker ${agent.breaker}` : "")));
    nodes.push(g);
  }
  graph.replaceChildren(...nodes);
}

async function refreshFeed() {
  const f = await api(`/console/api/feed?after=${feedAfter}`);
  feedAfter = f.next;
  for (const span of f.spans) feedRows.push(span);
  feedRows.splice(0, Math.max(0, feedRows.length - 200));
  fill("feed", feedRows.slice().reverse().map((s) => {
    const [from, to, what] = crossing(s);
    const conversation = String((s.attributes || {})["gen_ai.conversation.id"] || "");
    const tr = row([clock(s.start), `${((s.end - s.start) * 1000).toFixed(1)} ms`, from, to, what,
                    verdict(s), conversation.slice(0, 16)]);
    tr.dataset.conversation = conversation;
    tr.addEventListener("click", () => showConversation(conversation));
    return tr;
  }));
}

async function showConversation(conversation) {
  const c = await api(`/console/api/conversation/${encodeURIComponent(conversation)}`);
  document.getElementById("conversation-box").hidden = false;
  document.getElementById("conversation-id").textContent = conversation;
  const parties = [];
  const steps = c.spans.map((s) => {
    const [from, to, what] = crossing(s);
    for (const p of [from, to]) if (!parties.includes(p)) parties.push(p);
    return { from, to, what, refused: (s.attributes || {})["interlink.decision"] === "refused",
             rule: (s.attributes || {})["interlink.rule"] };
  });
  const width = Math.max(600, parties.length * 170), height = 70 + steps.length * 34;
  const diagram = document.getElementById("diagram");
  diagram.setAttribute("viewBox", `0 0 ${width} ${height}`);
  diagram.setAttribute("height", String(height));
  const defs = svg("defs");
  const head = svg("marker", { id: "head", viewBox: "0 0 10 10", refX: 10, refY: 5,
                               markerWidth: 7, markerHeight: 7, orient: "auto" });
  head.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#1d2330" }));
  defs.appendChild(head);
  const nodes = [defs];
  const x = (p) => 85 + parties.indexOf(p) * 170;
  for (const p of parties) {
    nodes.push(svg("text", { x: x(p), y: 20, "text-anchor": "middle", class: "party" }, p));
    nodes.push(svg("line", { x1: x(p), y1: 28, x2: x(p), y2: height - 10, class: "lifeline" }));
  }
  steps.forEach((step, i) => {
    const y = 50 + i * 34;
    nodes.push(svg("line", { x1: x(step.from), y1: y, x2: x(step.to), y2: y,
                              class: step.refused ? "message refused" : "message" }));
    const label = step.what + (step.refused ? ` — refused${step.rule ? ` (${step.rule})` : ""}` : "");
    nodes.push(svg("text", { x: (x(step.from) + x(step.to)) / 2, y: y - 5, "text-anchor": "middle",
                             class: step.refused ? "bad step" : "step" }, label));
  });
  diagram.replaceChildren(...nodes);
}

async function decide(call, decision) {
  try {
    await api(`/console/api/held/${encodeURIComponent(call)}`,
              { method: "POST", body: JSON.stringify({ decision, reason: "decided in the console" }) });
    await refreshOverview();
  } catch (error) {
    document.getElementById("status").textContent = `could not ${decision}: ${error.message}`;
  }
}

async function tick() {
  try {
    await refreshOverview();
    await refreshFeed();
    document.getElementById("status").textContent = `live · ${new Date().toLocaleTimeString()}`;
    document.getElementById("main").hidden = false;
    document.getElementById("login").hidden = true;
  } catch (error) {
    if (error.message !== "login") document.getElementById("status").textContent = `error: ${error.message}`;
  }
}

function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("interlink-token", fromHash);
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  token = sessionStorage.getItem("interlink-token");
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("interlink-token", token);
    tick();
  });
  if (!token) { showLogin(""); return; }
  tick();
  setInterval(tick, 1500);
}

document.addEventListener("DOMContentLoaded", start);
