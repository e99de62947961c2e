// "Recently ended": the calls that hung up in the last minutes. Loaded from the list route's
// ?ended=true when the stream starts over (a snapshot), then fed by the stream's `destroy`
// messages, which say how each call ended. One entry per channel, newest first: each leg has
// its own cause and its own side that hung up.

import { setLabel, show, val } from "./dom.js";
import * as fmt from "./format.js";
import { GREGORIAN_OFFSET, keyOf } from "./store.js";

const KEEP = 100;

export class EndedCalls {
  constructor() {
    this.items = [];
    this.listeners = new Set();
  }

  subscribe(fn) {
    this.listeners.add(fn);
  }

  changed() {
    for (const fn of this.listeners) fn();
  }

  reset(items) {
    this.items = (Array.isArray(items) ? items : []).filter((i) => i && i.uuid).slice(0, KEEP);
    this.changed();
  }

  // A destroy that says how the call ended (a hang-up, not a move out of view), with the
  // channel's last item; `now` is the daemon's clock in Gregorian seconds.
  add(last, ending, now) {
    if (!("hangup_cause" in ending) && !("duration_seconds" in ending)) return;
    const item = { ...(last || {}), ...ending };
    if (typeof item.ended_timestamp !== "number") item.ended_timestamp = now;
    const key = keyOf(item);
    this.items = [item, ...this.items.filter((i) => keyOf(i) !== key)].slice(0, KEEP);
    this.changed();
  }

  // The channel by its key (store.keyOf): node and uuid.
  get(key) {
    return this.items.find((i) => keyOf(i) === key);
  }
}

export class EndedView {
  constructor({ list, empty, count, ended, matches, onSelect }) {
    this.list = list;
    this.empty = empty;
    this.count = count;
    this.ended = ended;
    this.matches = matches; // the board's account and filter, applied here too
    this.onSelect = onSelect;
    this.selected = null;
    ended.subscribe(() => this.render());
    list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-key]");
      if (button) this.onSelect(button.dataset.key);
    });
  }

  setSelected(key) {
    this.selected = key;
    for (const button of this.list.querySelectorAll("button[data-key]")) {
      button.setAttribute("aria-pressed", String(button.dataset.key === key));
    }
  }

  render() {
    const shown = this.ended.items.filter((i) => this.matches(i));
    this.list.replaceChildren(...shown.map((item) => this.entry(item)));
    this.empty.hidden = shown.length > 0;
    this.count.textContent = shown.length ? String(shown.length) : "";
  }

  entry(item) {
    const key = keyOf(item);
    const li = document.createElement("li");
    li.dataset.uuid = item.uuid;
    li.dataset.node = item.node || "";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "ended-entry";
    button.dataset.key = key;
    button.setAttribute("aria-pressed", String(key === this.selected));
    const top = document.createElement("span");
    top.className = "ended-call";
    const when = document.createElement("span");
    when.className = "ended-time";
    when.textContent = fmt.timeOfDay(item.ended_timestamp, GREGORIAN_OFFSET);
    const who = document.createElement("span");
    who.className = "ended-parties";
    show(who, fmt.describe(item));
    top.append(when, " ", who);
    const bottom = document.createElement("span");
    bottom.className = "ended-how";
    const cause = document.createElement("span");
    cause.className = `cause${item.hangup_cause === "NORMAL_CLEARING" ? "" : " unusual"}`;
    cause.dataset.field = "hangup_cause";
    show(cause, item.hangup_cause ? val(item.hangup_cause) : "ended");
    const parts = [cause];
    const how = fmt.howEnded(item);
    if (how.length) {
      const span = field("hung_up_by", how);
      setLabel(span, "title", ["sip_hangup_disposition ", val(item.hangup_disposition)]);
      parts.push(span);
    }
    if (typeof item.duration_seconds === "number") {
      parts.push(field("duration_seconds", fmt.duration(item.duration_seconds), "Duration"));
    }
    if (typeof item.mos === "number") parts.push(field("mos", `MOS ${item.mos.toFixed(1)}`));
    for (const [i, part] of parts.entries()) {
      if (i) bottom.append(" · ");
      bottom.append(part);
    }
    button.append(top, bottom);
    li.append(button);
    return li;
  }
}

function field(name, line, title = "") {
  const span = document.createElement("span");
  span.dataset.field = name;
  show(span, line);
  if (title) span.title = title;
  return span;
}
