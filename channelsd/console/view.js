// The channels table: one <tbody> per call, one row per leg, updated in place.

import { isolated, plain, setLabel, show, val } from "./dom.js";
import * as fmt from "./format.js";
import { byAge, keyOf } from "./store.js";

const COLUMNS = ["caller", "callee", "direction", "state", "answered", "flags", "duration", "node", "account"];
const LABELS = {
  caller: "Caller",
  callee: "Callee",
  direction: "Direction",
  state: "State",
  answered: "Answered",
  flags: "Flags",
  duration: "Duration",
  node: "Node",
  account: "Account",
};

const SORT_VALUES = {
  caller: (i) => plain(fmt.caller(i)).toLowerCase(),
  callee: (i) => plain(fmt.callee(i)).toLowerCase(),
  direction: (i) => i.direction || "",
  state: (i) => plain(fmt.state(i)).toLowerCase(),
  answered: (i) => (i.answered ? 1 : 0),
  flags: (i) => (i.is_onhold ? 4 : 0) + (i.is_recording ? 2 : 0) + (i.is_secure ? 1 : 0),
  duration: (i) => -(i.timestamp || 0),
  node: (i) => i.node || "",
  account: (i) => plain(fmt.account(i)).toLowerCase(),
};

function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}

function haystack(item) {
  return [
    plain(fmt.caller(item)),
    plain(fmt.callee(item)),
    item.destination,
    plain(fmt.state(item)),
    item.direction,
    item.node,
    item.account_id,
    item.realm,
    item.uuid,
    item.username,
    item.presence_id,
    item.stale ? "stale" : "",
    item.is_onhold ? "hold" : "",
    item.is_recording ? "recording rec" : "",
    item.is_secure ? "encrypted" : "",
    item.hangup_cause,
  ]
    .filter(Boolean)
    .join(" ")
    .toLowerCase();
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function badge(text, kind, title = "") {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

export class ChannelsView {
  constructor({ table, empty, counts, store, onAction, onSelect, onFocusLost }) {
    this.table = table;
    this.empty = empty;
    this.counts = counts;
    this.store = store;
    this.onAction = onAction;
    this.onSelect = onSelect;
    this.selected = null;
    this.onFocusLost = onFocusLost;
    this.filter = "";
    this.account = "";
    this.sort = { key: "duration", dir: "desc" };
    this.bodies = new Map(); // call id -> tbody
    this.rows = new Map(); // channel key (store.keyOf) -> tr
    this.pending = null;
    store.subscribe(() => this.schedule());
    table.querySelector("thead").addEventListener("click", (e) => this.onHeader(e));
    table.addEventListener("click", (e) => {
      const row = e.target.closest("tbody tr");
      if (!row) return;
      const button = e.target.closest("button.act");
      if (button) this.onAction(row.dataset.key, button);
      else this.onSelect(row.dataset.key);
    });
    this.showSort();
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.schedule();
  }

  // The channel whose details are open (its key): its row is marked.
  setSelected(key) {
    if (this.selected === key) return;
    const before = this.selected && this.rows.get(this.selected);
    if (before) this.markSelected(before, false);
    this.selected = key;
    const now = key && this.rows.get(key);
    if (now) this.markSelected(now, true);
  }

  markSelected(row, on) {
    row.classList.toggle("selected", on);
    row.cells[0].firstChild.setAttribute("aria-pressed", String(on));
  }

  setAccount(accountId) {
    this.account = accountId;
    this.schedule();
  }

  onHeader(e) {
    const button = e.target.closest("button");
    const th = button && button.closest("th[data-sort]");
    if (!th) return;
    const key = th.dataset.sort;
    const dir = this.sort.key === key && this.sort.dir === "asc" ? "desc" : "asc";
    this.sort = { key, dir };
    this.showSort();
    this.render();
  }

  showSort() {
    for (const th of this.table.querySelectorAll("th[data-sort]")) {
      if (th.dataset.sort === this.sort.key) {
        th.setAttribute("aria-sort", this.sort.dir === "asc" ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
  }

  schedule() {
    if (this.pending === null) this.pending = setTimeout(() => this.render(), 30);
  }

  // Whether one channel passes the account selector and the filter box.
  matches(item) {
    return (
      (!this.account || item.account_id === this.account) &&
      (!this.filter || haystack(item).includes(this.filter))
    );
  }

  visibleCalls() {
    const all = this.store.calls();
    const shown = all.filter(
      (call) =>
        (!this.account || call.legs.some((l) => l.account_id === this.account)) &&
        (!this.filter || call.legs.some((l) => haystack(l).includes(this.filter))),
    );
    const value = SORT_VALUES[this.sort.key];
    const sign = this.sort.dir === "asc" ? 1 : -1;
    shown.sort((a, b) => {
      const byKey = compare(value(a.legs[0]), value(b.legs[0]));
      return sign * byKey || byAge(a.legs[0], b.legs[0]);
    });
    return { all, shown };
  }

  render() {
    clearTimeout(this.pending);
    this.pending = null;
    const { all, shown } = this.visibleCalls();
    const names = this.store.accounts();
    const keepBodies = new Set();
    const keepRows = new Set();
    shown.forEach((call, index) => {
      let body = this.bodies.get(call.id);
      if (!body) {
        body = document.createElement("tbody");
        body.className = "call";
        this.bodies.set(call.id, body);
      }
      keepBodies.add(call.id);
      body.classList.toggle("multi", call.legs.length > 1);
      call.legs.forEach((leg, i) => {
        const key = keyOf(leg);
        let row = this.rows.get(key);
        if (!row) {
          row = this.makeRow(key, leg);
          this.rows.set(key, row);
          if (key === this.selected) this.markSelected(row, true);
        }
        keepRows.add(key);
        this.fillRow(row, leg, names, i);
        if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
      });
      const current = this.table.tBodies[index];
      if (current !== body) this.table.insertBefore(body, current || null);
    });
    let focusLost = false;
    for (const [key, row] of this.rows) {
      if (!keepRows.has(key)) {
        focusLost ||= row.contains(document.activeElement);
        row.remove();
        this.rows.delete(key);
      }
    }
    for (const [id, body] of this.bodies) {
      if (!keepBodies.has(id)) {
        body.remove();
        this.bodies.delete(id);
      }
    }
    this.showCounts(all, shown);
    // A row that had the keyboard focus ended: do not leave the focus nowhere.
    if (focusLost) this.onFocusLost();
  }

  showCounts(all, shown) {
    const legs = (calls) => calls.reduce((n, c) => n + c.legs.length, 0);
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    let text = `${plural(shown.length, "call")}, ${plural(legs(shown), "channel")}`;
    if (shown.length !== all.length) text += ` (of ${all.length} calls)`;
    setText(this.counts, text);
    this.empty.hidden = shown.length > 0;
    setText(this.empty, all.length ? "No call matches the filter." : "No live channels.");
  }

  makeRow(key, item) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    row.dataset.uuid = item.uuid;
    row.dataset.node = item.node || "";
    for (const key of COLUMNS) {
      const cell = document.createElement("td");
      cell.className = `col-${key}`;
      cell.dataset.label = LABELS[key];
      row.append(cell);
    }
    // The caller is a button: it opens the call's details, by mouse or keyboard.
    const select = document.createElement("button");
    select.type = "button";
    select.className = "sel";
    select.setAttribute("aria-pressed", "false");
    row.cells[0].append(select);
    const cell = document.createElement("td");
    cell.className = "col-actions";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "act";
    button.textContent = "Actions";
    cell.append(button);
    row.append(cell);
    return row;
  }

  fillRow(row, item, names, legIndex) {
    const cells = row.cells;
    row.classList.toggle("stale", Boolean(item.stale));
    row.classList.toggle("onhold", Boolean(item.is_onhold));
    row.classList.toggle("leg", legIndex > 0);
    const leg = legIndex > 0 ? " (other leg)" : "";
    show(cells[0].firstChild, fmt.caller(item));
    setLabel(cells[0].firstChild, "title", ["Details of ", ...fmt.describe(item), leg]);
    show(cells[1], fmt.callee(item));
    show(cells[2], val(item.direction));
    show(cells[3], fmt.state(item));
    setText(cells[4], item.answered ? "yes" : "no");
    this.fillFlags(cells[5], item);
    setText(cells[6], fmt.duration(this.store.duration(item)));
    this.fillNode(cells[7], item);
    show(cells[8], fmt.account(item, names));
    setLabel(cells[8], "title", val(item.account_id));
    const button = cells[9].firstChild;
    setLabel(button, "aria-label", ["Actions for ", ...fmt.describe(item), leg]);
    button.disabled = !item.account_id;
    button.title = item.account_id ? "" : "This channel has no account: the API cannot act on it";
  }

  fillFlags(cell, item) {
    const found = fmt.flags(item);
    const key = found.map(([text]) => text).join("|");
    if (cell.dataset.key === key) return;
    cell.dataset.key = key;
    const parts = [];
    for (const [text, kind, title] of found) {
      if (parts.length) parts.push(" ");
      parts.push(badge(text, kind, title));
    }
    cell.replaceChildren(...parts);
  }

  fillNode(cell, item) {
    const node = typeof item.node === "string" ? item.node : "";
    const key = JSON.stringify([node, Boolean(item.stale)]);
    if (cell.dataset.key === key) return;
    cell.dataset.key = key;
    const parts = node ? [isolated(node)] : [];
    if (item.stale) parts.push(" ", badge("stale", "stale"));
    cell.replaceChildren(...parts);
    cell.title = item.stale ? "The node is disconnected: this channel is not confirmed" : "";
  }

  // Durations tick every second without a full render.
  tick() {
    for (const [key, row] of this.rows) {
      const item = this.store.items.get(key);
      if (item) setText(row.cells[6], fmt.duration(this.store.duration(item)));
    }
  }
}
