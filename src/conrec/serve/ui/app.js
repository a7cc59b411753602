// The inspector page. Rules that keep it safe (see conrec/serve/ui.py): data reaches the DOM only
// as text (el() below builds nodes; no string is ever parsed as HTML), events are bound with
// addEventListener, every data call goes through api(), which sends the API key, and every piece of data shown
// (title, category, item or user id, pasted text) is isolated in a <bdi> (bdi() below).
"use strict";

const KEY_STORE = "conrec.apiKey";
// viewSeq numbers the user loads: an answer for an earlier one (a slow request overtaken by a later
// pick) is dropped, never drawn under the later user. scoreSeq does the same for slate scores (a
// slower answer for an earlier threshold, slate or user), userSeq and searchSeq for the user and item searches' results.
const state = { health: null, overview: null, view: null, viewSeq: 0, slate: [], lastScore: null, scoring: false, scoreSeq: 0, scoreTimer: null, userSeq: 0, searchSeq: 0 };
const statusSeq = new Map();  // status line id -> number of the latest guarded() call writing to it

function $(id) { return document.getElementById(id); }

// el("li", {class: "x", dataset: {item: "i1"}}, "text", childNode...): text children become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }

// Characters that show as nothing or act unseen, written as visible escapes exactly as the CLI writes them
// (conrec.console_text: the C0 and C1 controls as "\x0a", the others as "\u200b"): zero-width space, word joiner and
// byte order mark, the left-to-right and right-to-left marks, the bidi embeddings, overrides and isolates, and the line
// and paragraph separators. The item id "zw\u200bsp" read as "zwsp", "u\u200ex" as "ux", and a title of zero-width
// spaces was an empty row. Not the zero-width non-joiner and joiner: Persian and Indic spelling and emoji sequences
// need them.
const UNSEEN = /[\u0000-\u001f\u007f-\u009f\u200b\u200e\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]/g;
function escaped(ch) {
  const code = ch.charCodeAt(0);
  return code <= 0xff ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
}
function visible(text) { return String(text).replace(UNSEEN, escaped); }

// A title with no visible character (empty, or zero-width, control and space characters only: `conrec data` warns of
// such titles) is shown as its item's id, as the data stage titles an item with an empty title.
const NO_VISIBLE = /^[\p{Cc}\p{Cf}\p{Z}]*$/u;
function titleOf(item) { return item.title && !NO_VISIBLE.test(item.title) ? item.title : item.item_id; }

// A piece of data shown among the page's own text: in a <bdi> (its direction its own, dir=auto), so that
// right-to-left letters in it cannot reorder the text around it; a title ending in U+202E RIGHT-TO-LEFT OVERRIDE
// showed "(similarity 0.4472)" after it as "2744.0". A <bdi> is an isolate (FSI ... PDI) that the text's own controls
// could end early (a stray PDI, a paragraph separator: bidi class B); visible() writes each of those, and every other
// bidi control, as an escape, so no character of the text acts on the isolate or on the text around it.
function bdi(text) { return el("bdi", {}, visible(text)); }

// A title (or a reason quoting titles) as bdi() shows it, at most a few lines tall (app.css .clamp): a
// 3,000-character title made one timeline row 2,365 px tall, so the timeline needed screens of scrolling to pass one
// event. Its whole text stays in the page (a screen reader reads it, a copy takes it) and, where it may be cut, in the
// tooltip (the title attribute).
const LONG_TITLE = 60;  // characters from which a title may fill the three lines on a phone
function clamped(text) {
  const node = bdi(text);
  node.className = "clamp";
  if (node.textContent.length > LONG_TITLE) node.title = node.textContent;
  return node;
}

// A title or id inside a control's name or a status line: a screen reader reads them whole, and a 3,000-character
// title made each "Add" and "why" of it minutes long; cut at NAME_CHARS characters (a real title is shorter: "Dr.
// Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)" has 76), the rest said to be cut.
const NAME_CHARS = 120;
function brief(text) {
  const chars = [...String(text)];
  return chars.length > NAME_CHARS ? chars.slice(0, NAME_CHARS).join("") + "… (cut)" : String(text);
}

// ids as "a, b, c", each isolated
function bdiList(ids) { return ids.flatMap((id, n) => n ? [", ", bdi(id)] : [bdi(id)]); }

// An error whose message shows data: parts are strings (the page's text) and nodes (the data, in bdi()).
class ShownError extends Error {
  constructor(parts) {
    super(parts.map(p => (p instanceof Node ? p.textContent : p)).join(""));
    this.parts = parts;
  }
}

// text: a string, or a list of strings and nodes
function setStatus(text, isError, id = "status") {
  const s = $(id);
  s.replaceChildren(...(Array.isArray(text) ? text : [text || ""]));
  s.className = "status" + (isError && text ? " error" : "");
}

class AuthNeeded extends Error {}

// Shows the key form and puts the keyboard focus in its field, the only control that works before the key is given:
// as the page loaded, the first Tab skipped it (the status line scrolled into view moved the start of the Tab order
// into the page below it). The focus moves there only when the form appears, or when it is already in the form (a
// wrong key, typed again), never from another field while the user types there.
function askForKey() {
  const form = $("key-form"), field = $("api-key");
  const appearing = form.hidden;
  form.hidden = false;
  if (appearing || form.contains(document.activeElement)) { field.focus(); field.select(); }
}

async function api(path, body) {
  const headers = { "Accept": "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers["X-API-Key"] = key;
  const init = { headers, method: body === undefined ? "GET" : "POST" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    askForKey();
    throw new AuthNeeded(key ? "wrong API key: type the server's key above" : "this server needs its API key: type it above");
  }
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${r.status}`;
    throw Object.assign(new Error(detail), { status: r.status });
  }
  return data;
}

// Writes text to the status line `id` as its latest word: a guarded() call still running there leaves it alone.
function announce(text, isError, id = "status") {
  statusSeq.set(id, (statusSeq.get(id) || 0) + 1);
  setStatus(text, isError, id);
}

// Runs fn with "what…" on the status line `id` (a role=status live region), then writes there what came of it:
// fn's outcome (a string or parts, "" when it has none), or the error. The outcome is what a screen reader announces
// once the work is done, so it is never left blank on success. quiet: no "what…" first, for work the page starts by
// itself (a rescore as the threshold is typed), which would announce "scoring…" at every keystroke. A call overtaken
// by a later one on the same line leaves the line to that one; an error of what the user did is scrolled into
// view. Returns fn's error, or null.
async function guarded(what, fn, id = "status", quiet = false) {
  const token = (statusSeq.get(id) || 0) + 1;
  statusSeq.set(id, token);
  const current = () => statusSeq.get(id) === token;
  try {
    if (!quiet) setStatus(what + "…", false, id);
    const outcome = await fn();
    if (current()) setStatus(outcome || "", false, id);
    return null;
  } catch (e) {
    if (current()) {
      setStatus([`${what} failed: `, ...(e.parts || [bdi(e.message)])], true, id);  // a server's detail quotes data
      // the error of what the user did is in sight (200 % zoom); one asking for the key is not scrolled to: the key's
      // field, at the top, has the focus (askForKey), and a scroll would move the Tab order's start away from it
      if (!quiet && !(e instanceof AuthNeeded)) $(id).scrollIntoView({ block: "nearest" });
    }
    return e;
  }
}

function fmtScore(s) {
  if (s === null || s === undefined) return "—";
  const a = Math.abs(s);
  return a !== 0 && (a < 0.001 || a >= 1e5) ? s.toExponential(2) : s.toFixed(a < 1 ? 4 : 3);
}

// "1 event", "2 events"
function count(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function k() { return state.health ? state.health.limits.default_k : 10; }

// A table's category, also shown under the title, where CSS shows it instead of the Category column on a phone
// (a 360 px screen has no room for four columns: the timeline's Feedback was cut off).
function categoryUnder(category) { return category ? el("span", { class: "cat-under" }, bdi(category)) : null; }

// ---- picking a user ------------------------------------------------------------------------
// The line at the top, from /healthz: read at load and again with every point opened, so that a stage rerun on the
// served run since the server started (loaded_current / model_current false) is said there.
function showHealth(health) {
  state.health = health;
  const stale = [health.model_current === false ? "the served model is no longer the run's current one" : null,
                 health.loaded_current === false ? "a stage it read (data, SID or eval) has run again or been cleared since it started" : null].filter(Boolean);
  $("served").textContent = `serving model ${health.model} · ${health.n_items} items · top-${k()} lists`
    + (stale.length ? ` · ${stale.join("; ")}: restart conrec serve to load the run's current state` : "");
  $("served").classList.toggle("stale", stale.length > 0);
}

// Why the eval stage's lists are not shown (the overview's and each point view's precomputed_stale), or "".
function precomputedNote(stale, hint) {
  return stale
    ? `The evaluated models' lists are not shown: the evaluation is not current for the served config (${stale}); ${hint || "see the server's log"}.`
    : "";
}

function renderPointsHint(ov) {
  $("points-hint").textContent = (ov.n_points
    ? `${ov.n_points} evaluation points of ${ov.n_users} users (split “${ov.split}”).`
    : `No evaluation points in this run (split “${ov.split}”): paste a history instead.`)
    + (ov.precomputed_stale ? " " + precomputedNote(ov.precomputed_stale, ov.precomputed_hint) : "")
    + (ov.live_unscored ? ` The served model's live list is not scored on these points: ${ov.live_unscored}.` : "");
}

// The run's health and overview, shown; returns the outcome for the status line ("Run loaded: model grpo, 1682
// items, 254 evaluation points"): the page's first line, "loading the run…", was otherwise left blank.
async function loadOverview() {
  const health = await api("/healthz");
  showHealth(health);
  const ov = await api("/ui/api/overview");
  state.overview = ov;
  renderPointsHint(ov);
  $("random-user").disabled = !ov.n_points;
  $("key-form").hidden = true;
  return `Run loaded: model ${health.model}, ${count(health.n_items, "item")}, ${count(ov.n_points, "evaluation point")}`;
}

// "first 50 of 120" under a search the server cut (it returns at most 50 rows, and how many matched)
function moreNote(shown, total, what) {
  return total > shown ? el("li", { class: "meta more" }, `first ${shown} of ${total} ${what}: type more to narrow the search`) : null;
}

// What a search found, for its status line: "3 evaluation points found", "first 50 of 120 matching titles"
function foundNote(shown, total, one) {
  return total > shown ? `first ${shown} of ${total} ${one}s found` : `${count(shown, one)} found`;
}

async function findUsers(query) {
  const seq = ++state.userSeq;
  const data = await api(`/ui/api/points?user=${encodeURIComponent(query)}`);
  if (seq !== state.userSeq) return;
  const list = clear($("user-results"));
  if (!data.points.length) list.append(el("li", { class: "meta" }, "no evaluation point for a user id starting with “", bdi(query), "”"));
  for (const p of data.points) {
    list.append(el("li", { dataset: { sample: p.sample_id } },
      el("span", {}, el("strong", {}, bdi(p.user_id)), " ", el("span", { class: "meta" }, `${p.date} · ${count(p.n_history, "event")} · ${count(p.n_future, "future dislike")}`)),
      // the aria-labels name the object: a screen reader's list of controls held "Open" ×3, "Add" ×20, "why" ×50
      el("button", { type: "button", class: "small secondary", "aria-label": `Open user ${brief(p.user_id)} (${p.date})`, on: { click: () => guarded("loading user", () => showPoint(`/ui/api/points/${p.sample_id}`), "pick-status") } }, "Open")));
  }
  const more = moreNote(data.points.length, data.total, "evaluation points");
  if (more) list.prepend(more);  // on top: the list scrolls
  return data.points.length ? foundNote(data.points.length, data.total, "evaluation point")
    : ["no evaluation point for a user id starting with “", bdi(query), "”"];
}

// A point view says, as the overview does, whether the eval stage's lists are still shown (the run may have been
// retrained since the page loaded): the note above the points follows it, as does the top line (/healthz, read again).
async function showPoint(path) {
  const seq = ++state.viewSeq;
  const [view, health] = await Promise.all([
    api(`${path}${path.includes("?") ? "&" : "?"}k=${k()}`),
    api("/healthz").catch(e => { if (e instanceof AuthNeeded) throw e; return null; }),
  ]);
  if (seq !== state.viewSeq) return;
  if (health) showHealth(health);
  if (state.overview && view.precomputed_stale !== state.overview.precomputed_stale) {
    Object.assign(state.overview, { precomputed_stale: view.precomputed_stale, precomputed_hint: view.precomputed_hint });
    renderPointsHint(state.overview);
  }
  return showView(view, seq);
}

function parsePasted(text) {
  const events = [];
  text.split(/\r?\n/).forEach((raw, n) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const m = /^([+-])\s*(\S+)$/.exec(line) || /^(\S+)\s+([+-]1?)$/.exec(line);
    if (!m) {
      // a sign before or after an id holding whitespace: say that this is why (the API takes such an id)
      const id = /^[+-]/.test(line) ? line.slice(1).trim() : line.replace(/\s+[+-]1?$/, "");
      if (id !== line && /\s/.test(id)) {
        throw new ShownError([`line ${n + 1}: the item id “`, bdi(id.slice(0, 60)), "” holds a space or tab, which a pasted line cannot carry: "
          + "write one event a line; send such an id to the API itself (/v1/dislikes)"]);
      }
      throw new ShownError([`line ${n + 1}: write -item_id (disliked) or +item_id (liked), got “`, bdi(line.slice(0, 60)), "”"]);
    }
    const [sign, id] = m[1] === "+" || m[1] === "-" ? [m[1], m[2]] : [m[2][0], m[1]];
    events.push({ item_id: id, feedback: sign === "-" ? -1 : 1 });
  });
  if (!events.length) throw new ShownError(["the pasted history is empty"]);
  return events;
}

async function showPasted(text) {
  const history = parsePasted(text);
  const seq = ++state.viewSeq;
  const view = await api("/ui/api/history", { history, k: k() });
  return seq === state.viewSeq ? showView(view, seq) : "";
}

// ---- one user: timeline, future, lists -------------------------------------------------------
// The user's timeline at once, the lists once the live one is in (unless another user was picked meanwhile).
// Returns what was loaded, for the status line: "User 13 loaded: 14 events, 2 future dislikes, 4 lists".
async function showView(view, seq) {
  state.view = view;
  state.lastScore = null;
  state.scoreSeq++;  // a slate score still on its way is the previous user's
  state.scoring = false;
  renderUser(view);
  clear($("lists")).append(el("p", { class: "hint" }, "loading the models' lists…"));
  $("lists-card").hidden = false;
  clear($("scores").tBodies[0]);  // the previous user's slate scores
  $("scores").hidden = true;
  $("score-summary").textContent = "";
  renderSlate();
  const live = await liveList(view);
  if (seq !== state.viewSeq) return "";
  const lists = renderLists(view, live);
  $("slate-card").hidden = false;
  if (state.slate.length) guarded("scoring the slate", scoreSlate, "slate-status", true);
  const what = `${count(view.timeline.length, "event")}, `
    + (view.source === "point" ? `${count(view.future.length, "future dislike")}, ` : "") + count(lists, "list");
  return view.source === "point" ? ["User ", bdi(view.user_id), ` loaded: ${what}`] : `Pasted history loaded: ${what}`;
}

function renderUser(view) {
  $("user-card").hidden = false;
  const negs = view.history.filter(e => e.feedback < 0).length;
  if (view.source === "point") {
    // the history is the newest data.split.max_history events: say how many the user had before the point
    const shown = view.history.length < view.n_before ? `; the timeline shows the newest ${view.history.length} of ${view.n_before}, what the models read` : "";
    $("user-h").replaceChildren("User ", bdi(view.user_id));
    $("user-meta").textContent = `Evaluation point #${view.sample_id} on ${view.date}: ${count(view.n_before, "event")} before it (${count(view.n_dislikes_before, "dislike")}${shown}), ${count(view.future.length, "dislike")} after it, held out.`;
    $("future-hint").textContent = `${count(view.future.length, "item")} the user disliked next; the lists below mark ${view.future.length === 1 ? "it as a hit" : "them as hits"}.`;
  } else {
    $("user-h").textContent = "Pasted history";
    const skipped = view.skipped_items && view.skipped_items.length
      ? [" Left out, unknown to the model (serve.unknown_items: skip): ", ...bdiList(view.skipped_items), "."] : [];
    $("user-meta").replaceChildren(`${count(view.history.length, "event")} (${count(negs, "dislike")}), in the order pasted; no future to compare with.`, ...skipped);
    $("future-hint").textContent = "None for a pasted history.";
  }
  const body = clear($("timeline").tBodies[0]);
  if (!view.timeline.length) body.append(el("tr", {}, el("td", { class: "empty", colspan: 4 }, "no event before this point")));
  for (const e of view.timeline) {
    const neg = e.feedback < 0;
    body.append(el("tr", { class: neg ? "neg" : "pos", dataset: { item: e.item_id } },
      el("td", { class: "date" }, e.date || "—"),
      el("td", { class: "title" }, clamped(titleOf(e)), categoryUnder(e.category)),
      el("td", { class: "cat" }, bdi(e.category || "")),
      el("td", {}, el("span", { class: "badge " + (neg ? "neg" : "pos") }, neg ? "disliked" : "liked"))));
  }
  const fut = clear($("future"));
  for (const f of view.future) {
    fut.append(el("li", { dataset: { item: f.item_id } }, el("span", { class: "title" }, clamped(titleOf(f))),
      el("span", { class: "meta" }, bdi(f.category || "")), el("span", { class: "by" })));
  }
}

// On an evaluation point whose future the served model saw (view.live_unscored says how), its list marks
// no hit: a hit there would be the future read back, not predicted.
// On a point without a prior event (view.live_unasked says why) the API is not asked: it refuses an empty history.
// On an evaluation point the items rated before its history (view.exclude) are left out, as the eval's lists leave them out.
async function liveList(view) {
  if (view.live_unasked) return { name: state.health ? state.health.model : "served model", kind: "live", items: [], error: view.live_unasked };
  const req = { history: view.history, k: k(), explain: true };
  if (view.exclude && view.exclude.length) req.exclude = view.exclude;
  try {
    const r = await api("/v1/dislikes", req);
    const future = new Set(view.live_unscored ? [] : view.future.map(f => f.item_id));
    return { name: r.model, kind: "live", unscored: view.live_unscored || null,
             items: r.items.map(it => ({ ...it, category: "", hit: future.has(it.item_id) })) };
  } catch (e) {
    if (e instanceof AuthNeeded) throw e;
    return { name: state.health ? state.health.model : "served model", kind: "live", items: [], error: e.message };
  }
}

function reasonNode(reason, title, model) {
  if (!reason) return null;
  const cites = [];
  for (const ev of reason.similar_dislikes || [])
    cites.push(el("li", {}, "same SID cluster as ", el("q", {}, clamped(titleOf(ev))), ` (${count(ev.shared_sid_levels, "shared level")})`));
  for (const ev of reason.co_disliked_with || [])
    cites.push(el("li", {}, "co-disliked with ", el("q", {}, clamped(titleOf(ev))), ` (similarity ${fmtScore(ev.similarity)})`));
  return el("details", { class: "why" }, el("summary", { "aria-label": `why: ${brief(title)}, ${model} list` }, "why"),
    cites.length ? el("ul", {}, cites) : el("p", {}, clamped(reason.text || "no close past dislike")));  // the text names titles
}

function renderLists(view, live) {
  const served = live.name;
  const lists = [live, ...view.lists.filter(m => m.name !== served)];
  const box = clear($("lists"));
  if (view.precomputed_stale) box.append(el("p", { class: "hint stale-note" }, precomputedNote(view.precomputed_stale, view.precomputed_hint)));
  const hitsBy = new Map();
  for (const m of lists) {
    const hits = m.items.filter(it => it.hit).length;
    const label = { lm: "LM · eval run", baseline: "baseline · eval run", baseline_live: "baseline · computed live" }[m.kind] || m.kind;
    const kind = m.kind === "live" ? el("span", { class: "badge live" }, "served · live") : el("span", { class: "kind" }, label);
    const head = el("header", {}, el("h3", {}, m.name), kind);
    const summary = view.source !== "point" ? null
      : el("div", { class: "hint" }, m.unscored ? `hits not marked: ${m.unscored}` : `${hits} of ${m.items.length} in the future set`);
    const ol = el("ol", {});
    if (m.error) ol.append(el("li", { class: "empty" }, bdi(m.error)));  // a server's detail quotes data
    else if (!m.items.length) ol.append(el("li", { class: "empty" }, "no prediction for this point"));
    for (const it of m.items) {
      if (it.hit) hitsBy.set(it.item_id, [...(hitsBy.get(it.item_id) || []), m.name]);
      ol.append(el("li", { class: it.hit ? "hit" : null, dataset: { item: it.item_id, rank: it.rank } },
        el("div", { class: "line" },
          el("span", { class: "rank" }, `${it.rank}.`),
          el("span", { class: "title" }, clamped(titleOf(it))),
          it.hit ? el("span", { class: "badge hit" }, "hit") : null,
          el("span", { class: "score", title: "dislike score" }, fmtScore(it.score))),
        reasonNode(it.reason, titleOf(it), m.name)));
    }
    box.append(el("section", { class: "model-list", dataset: { model: m.name, kind: m.kind } }, head, summary, ol));
  }
  for (const li of $("future").children) {
    const by = hitsBy.get(li.dataset.item);
    li.querySelector(".by").textContent = by ? `hit by ${by.join(", ")}` : "";
  }
  $("lists-card").hidden = false;
  return lists.length;
}

// ---- slate ---------------------------------------------------------------------------------
async function searchItems(q) {
  const seq = ++state.searchSeq;
  const data = await api(`/ui/api/items?q=${encodeURIComponent(q)}`);
  if (seq !== state.searchSeq) return;
  const list = clear($("search-results"));
  if (!data.items.length) list.append(el("li", { class: "meta" }, "no title matches"));
  for (const it of data.items) {
    const inSlate = state.slate.some(s => s.item_id === it.item_id);
    list.append(el("li", { dataset: { item: it.item_id } },
      el("span", {}, clamped(titleOf(it)), " ", el("span", { class: "meta" }, bdi(it.category || ""))),
      el("button", { type: "button", class: "small secondary add", disabled: inSlate, "aria-label": `Add ${brief(titleOf(it))} to the slate`, on: { click: (ev) => addToSlate(it, ev.currentTarget) } }, "Add")));
  }
  const more = moreNote(data.items.length, data.total, "matching items");
  if (more) list.prepend(more);  // on top: the list scrolls
  return data.items.length ? foundNote(data.items.length, data.total, "matching item") : "no title matches";
}

// "2 items in the slate", "the slate is empty"
function slateSize() { return state.slate.length ? `${count(state.slate.length, "item")} in the slate` : "the slate is empty"; }

// Adding disables the pressed Add button, which would drop the keyboard focus to <body>: it goes to the next Add
// button that can still be pressed (else the one before, else the search field), and the slate's line says what changed.
function addToSlate(item, button) {
  const focused = document.activeElement === button;
  const max = state.health && state.health.limits.max_candidates;
  if (max && state.slate.length >= max) { announce(`a slate holds at most max_candidates = ${max} items`, true, "slate-status"); return; }
  if (state.slate.some(s => s.item_id === item.item_id)) return;
  state.slate.push(item);
  slateChanged();
  announce(["Added ", bdi(brief(titleOf(item))), `: ${slateSize()}`], false, "slate-status");
  if (!focused) return;
  const adds = [...$("search-results").querySelectorAll("button.add")];
  const at = adds.indexOf(button);
  const next = adds.slice(at + 1).find(b => !b.disabled) || adds.slice(0, Math.max(at, 0)).reverse().find(b => !b.disabled);
  (next || $("search-q")).focus();
}

// The slate is drawn again, so the pressed button is gone: the focus goes to the remove button now in its place
// (else the last one, else the slate's heading), and the slate's line says what changed.
function removeFromSlate(n, button) {
  const focused = document.activeElement === button;
  const [item] = state.slate.splice(n, 1);
  slateChanged();
  announce(["Removed ", bdi(brief(titleOf(item))), `: ${slateSize()}`], false, "slate-status");
  if (!focused) return;
  const removes = $("slate").querySelectorAll("button");
  (removes[Math.min(n, removes.length - 1)] || $("slate-list-h")).focus();
}

// The shown scores are for the slate as it was: drop them (and any answer on its way), and score the
// new slate again when it had been scored.
function slateChanged() {
  renderSlate();
  const scored = state.lastScore !== null || state.scoring;
  state.lastScore = null;
  state.scoreSeq++;
  state.scoring = false;
  clearTimeout(state.scoreTimer);
  clear($("scores").tBodies[0]);
  $("scores").hidden = true;
  $("score-summary").textContent = "";
  if (scored && state.slate.length) state.scoreTimer = setTimeout(() => guarded("scoring the slate", scoreSlate, "slate-status", true), 300);
}

function renderSlate() {
  const ol = clear($("slate"));
  state.slate.forEach((it, n) => {
    ol.append(el("li", { dataset: { item: it.item_id } }, clamped(titleOf(it)),
      el("button", { type: "button", class: "small secondary", "aria-label": `Remove ${brief(titleOf(it))} from the slate`,
                     on: { click: (ev) => removeFromSlate(n, ev.currentTarget) } }, "remove")));
  });
  $("slate-count").textContent = state.slate.length ? count(state.slate.length, "item") : "empty: add items from the search";
  // the search results' Add buttons follow the slate: an item removed from it can be added again
  for (const li of $("search-results").querySelectorAll("li[data-item]")) {
    const add = li.querySelector("button.add");
    if (add) add.disabled = state.slate.some(s => s.item_id === li.dataset.item);
  }
  $("score-button").disabled = !state.slate.length || !state.view;
}

function threshold() {
  const raw = $("threshold").value.trim();
  if (!raw) return null;
  const t = Number(raw);
  if (!Number.isFinite(t)) throw new ShownError(["threshold “", bdi(raw), "” is not a number"]);
  return t;
}

// Returns what came of it, for the slate's status line: "Scored 3 items, 1 filtered at score ≥ 0.5".
async function scoreSlate() {
  if (!state.view || !state.slate.length) return "";
  if (state.view.live_unasked) throw new Error(state.view.live_unasked);
  const req = { history: state.view.history, candidates: state.slate.map(s => s.item_id), explain: false };
  const t = threshold();
  if (t !== null) req.threshold = t;
  const seq = ++state.scoreSeq;
  state.scoring = true;
  let r;
  try {
    r = await api("/v1/score", req);
  } finally {
    if (seq === state.scoreSeq) state.scoring = false;
  }
  if (seq !== state.scoreSeq) return "";
  state.lastScore = r;
  const cat = new Map(state.slate.map(s => [s.item_id, s.category]));
  const body = clear($("scores").tBodies[0]);
  for (const it of [...r.items].sort((a, b) => a.rank - b.rank)) {
    body.append(el("tr", { class: it.decision === "filter" ? "filtered" : null, dataset: { item: it.item_id } },
      el("td", { class: "num rank" }, String(it.rank)),
      el("td", { class: "title" }, clamped(titleOf(it)), categoryUnder(cat.get(it.item_id))),
      el("td", { class: "cat" }, bdi(cat.get(it.item_id) || "")),
      el("td", { class: "num score", dataset: { score: it.score === null ? "" : String(it.score) } }, fmtScore(it.score)),
      el("td", { class: "decision" }, it.decision ? el("span", { class: "badge " + it.decision }, it.decision) : "—")));
  }
  $("scores").hidden = false;
  $("score-summary").textContent = r.threshold === null || r.threshold === undefined
    ? `Scored by ${r.model}. Set a threshold to see keep/filter decisions.`
    : `Scored by ${r.model}: ${r.n_filtered} of ${r.items.length} filtered at score ≥ ${r.threshold}.`;
  return `Scored ${count(r.items.length, "item")}` + (r.threshold === null || r.threshold === undefined
    ? ", no threshold" : `, ${r.n_filtered} filtered at score ≥ ${r.threshold}`);
}

// ---- wiring --------------------------------------------------------------------------------
function submit(id, what, fn, statusId) {
  $(id).addEventListener("submit", (ev) => { ev.preventDefault(); guarded(what, fn, statusId); });
}

document.addEventListener("DOMContentLoaded", () => {
  submit("key-form", "checking the key", async () => {
    sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
    return `Key accepted. ${await loadOverview()}`;
  });
  // the pick card's own status lines, next to its controls: the one at the top is off-screen at 200 % zoom
  submit("user-form", "finding users", () => findUsers($("user-query").value), "pick-status");  // untrimmed: the server tries it as typed and stripped
  $("random-user").addEventListener("click", () => guarded("picking a random user", () => showPoint("/ui/api/points/random"), "pick-status"));
  $("paste-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = await guarded("inspecting the pasted history", () => showPasted($("paste-text").value), "paste-status");
    // a history the page or the server refuses (422: a line or an id; 413: too long, over max_history or the body
    // limit) marks the field, which names the error line as its description
    const rejected = error instanceof ShownError || (error && (error.status === 422 || error.status === 413));
    $("paste-text").setAttribute("aria-invalid", String(Boolean(rejected)));
    if (rejected) $("paste-text").setAttribute("aria-describedby", "paste-status");
    else $("paste-text").removeAttribute("aria-describedby");
  });
  submit("search-form", "searching", () => searchItems($("search-q").value.trim()), "search-status");
  submit("score-form", "scoring the slate", scoreSlate, "slate-status");
  $("clear-slate").addEventListener("click", () => { state.slate = []; slateChanged(); announce("Slate cleared: the slate is empty", false, "slate-status"); });
  $("threshold").addEventListener("input", () => {  // rescored once typing pauses, quietly: only the result is announced
    clearTimeout(state.scoreTimer);
    if (state.lastScore || state.scoring) state.scoreTimer = setTimeout(() => guarded("scoring the slate", scoreSlate, "slate-status", true), 300);
  });
  renderSlate();
  guarded("loading the run", loadOverview);
});
