// The details panel: everything the daemon knows about one channel. The single GET
// (/v2/accounts/{A}/channels/{uuid}) gives the media and signalling details that list items
// leave out; it is fetched when the panel opens and again when the stream changes the
// channel. Live fields (hold, recording, state) show from the stream at once meanwhile.

import { routes } from "./api.js";
import { plain, show, val } from "./dom.js";
import * as fmt from "./format.js";
import { GREGORIAN_OFFSET, keyOf } from "./store.js";

const REFETCH_MS = 400;

const yesNo = (v) => (v === true ? "yes" : v === false ? "no" : "");
const text = (key) => (i) => val(i[key]);
const seconds = (v) => (typeof v === "number" ? fmt.duration(v) : "");
const live = (value) => (i, p) => (p.live ? value(i, p) : "");
const ended = (value) => (i, p) => (p.live ? "" : value(i, p));

// [section, [[field name (data-field), label, value(item, panel)], ...]]; a value is a line
// (dom.js: our words and the switch's values); empty ones are left out.
const SECTIONS = [
  [
    "Call",
    [
      ["caller", "Caller", (i) => fmt.caller(i)],
      ["callee", "Callee", (i) => fmt.callee(i)],
      ["destination", "Destination", text("destination")],
      ["direction", "Direction", text("direction")],
      // What is true now: for a channel that ended, its last state would mislead (changes in
      // its last instant go out with the destroy, not before it).
      ["state", "State", live((i) => joined([val(i.call_state), val(i.state)]))],
      ["answered", "Answered", (i) => yesNo(i.answered)],
      ["is_onhold", "On hold", live((i) => yesNo(i.is_onhold))],
      ["is_recording", "Recording", live((i) => yesNo(i.is_recording))],
      ["duration", "Duration", live((i, p) => fmt.duration(p.store.duration(i)))],
      ["started", "Started", (i) => fmt.timeOfDay(i.timestamp, GREGORIAN_OFFSET)],
      ["ended", "Ended", ended((i) => fmt.timeOfDay(i.ended_timestamp, GREGORIAN_OFFSET))],
      ["hangup_cause", "Cause", ended(text("hangup_cause"))],
      ["hung_up_by", "How it ended", ended((i) => fmt.howEnded(i))],
      ["duration_seconds", "Duration", ended((i) => seconds(i.duration_seconds))],
      ["billing_seconds", "Billed", ended((i) => seconds(i.billing_seconds))],
      ["mos", "MOS", ended((i) => (typeof i.mos === "number" ? i.mos.toFixed(1) : ""))],
      ["application", "Application", text("application")],
    ],
  ],
  [
    "Media",
    [
      ["read_codec", "Read codec", (i) => fmt.codec(i.read_codec, i.read_rate)],
      ["write_codec", "Write codec", (i) => fmt.codec(i.write_codec, i.write_rate)],
      ["remote_media", "Remote media", (i) => fmt.hostPort(i.remote_media_ip, i.remote_media_port)],
      [
        "encrypted",
        "Encrypted",
        (i) =>
          i.is_secure
            ? joined([val(i.secure_media), val(i.crypto_suite)]) || "yes"
            : yesNo(i.is_secure),
      ],
    ],
  ],
  [
    "Signalling",
    [
      ["endpoint", "Endpoint", text("endpoint")],
      ["channel_name", "Channel", text("channel_name")],
      ["sip_call_id", "SIP Call-ID", text("sip_call_id")],
      ["user_agent", "User agent", text("user_agent")],
      ["far_end", "Far end", (i) => fmt.hostPort(i.network_ip, i.network_port)],
      ["request_uri", "Request URI", text("request_uri")],
      ["transport", "Transport", text("transport")],
      ["gateway", "Gateway", text("gateway")],
    ],
  ],
  [
    "Identity",
    [
      ["account", "Account", (i) => (i.account_id ? joined([val(i.realm), val(i.account_id)]) : "")],
      ["owner_id", "Owner", text("owner_id")],
      ["authorizing_id", "Device", text("authorizing_id")],
      ["username", "Username", text("username")],
      ["presence_id", "Presence", text("presence_id")],
      ["node", "Node", text("node")],
      ["uuid", "UUID", text("uuid")],
      ["other_leg", "Other leg", text("other_leg")],
      ["bridge_id", "Bridge", (i) => (i.bridge_id && i.bridge_id !== i.uuid ? val(i.bridge_id) : "")],
    ],
  ],
];

// The non-empty values joined by " · ", or "" when there is none.
function joined(values) {
  const found = values.filter((v) => v.val);
  return found.length ? found.flatMap((v, n) => (n ? [" · ", v] : [v])) : "";
}

export class DetailsPanel {
  constructor({ root, store, ended, api, scope, onSelect, onClose }) {
    this.root = root;
    this.el = (id) => root.querySelector(`#${id}`);
    this.store = store;
    this.ended = ended;
    this.api = api;
    this.scope = scope;
    this.onSelect = onSelect;
    this.key = null; // the channel shown (store.keyOf): node and uuid
    this.detail = null; // the last single GET
    this.seen = null; // the stream's item the panel last showed
    this.live = false;
    this.fetching = false;
    this.again = false;
    this.timer = null;
    this.generation = 0;
    store.subscribe(() => this.onStore());
    ended.subscribe(() => this.key && !this.live && this.render());
    this.el("details-close").addEventListener("click", () => onClose());
    this.el("details-body").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-select]");
      if (button) this.onSelect(button.dataset.select);
    });
  }

  show(key) {
    if (key === this.key) return;
    this.key = key;
    this.detail = null;
    this.seen = this.store.items.get(key) || null;
    this.generation += 1;
    clearTimeout(this.timer);
    this.again = false;
    this.render();
    if (this.seen) this.fetch();
  }

  clear() {
    this.key = null;
    this.detail = null;
    this.seen = null;
    this.generation += 1;
    clearTimeout(this.timer);
    this.render();
  }

  onStore() {
    if (!this.key) return;
    const now = this.store.items.get(this.key) || null;
    if (now === this.seen) return;
    this.seen = now;
    this.render();
    if (now) this.scheduleFetch();
  }

  scheduleFetch() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fetch(), REFETCH_MS);
  }

  async fetch() {
    const item = this.store.items.get(this.key);
    if (!item || !item.account_id) return; // no account: the single GET cannot name it
    if (this.fetching) {
      this.again = true;
      return;
    }
    this.fetching = true;
    const generation = this.generation;
    try {
      const data = await this.api().get(routes(this.scope()).channel(item.account_id, item.uuid));
      // The single GET names the channel by uuid only: with the same uuid on two nodes it
      // may answer with the other node's channel, which is not this one's details.
      const same = data && typeof data === "object" && keyOf(data) === this.key;
      if (generation === this.generation && same) {
        this.detail = data;
        this.render();
      }
    } catch {
      // Gone meanwhile (404) or a passing error: the stream's item still shows.
    } finally {
      this.fetching = false;
      if (this.again && generation === this.generation) {
        this.again = false;
        this.scheduleFetch();
      }
    }
  }

  render() {
    const body = this.el("details-body");
    const status = this.el("details-status");
    this.el("details-hint").hidden = Boolean(this.key);
    this.el("details-close").hidden = !this.key;
    this.root.classList.toggle("open", Boolean(this.key));
    if (!this.key) {
      show(this.el("details-title"), "Details");
      body.replaceChildren();
      status.hidden = true;
      return;
    }
    const live = this.store.items.get(this.key);
    const ended = live ? null : this.ended.get(this.key);
    this.live = Boolean(live);
    const item = { ...(this.detail || {}), ...(ended || {}), ...(live || {}) };
    show(this.el("details-title"), ["Details: ", ...fmt.describe(item)]);
    if (live) {
      status.hidden = true;
    } else {
      const how = [];
      if (ended) {
        if (ended.hangup_cause) how.push([val(ended.hangup_cause)]);
        if (fmt.howEnded(ended).length) how.push(fmt.howEnded(ended));
        if (typeof ended.duration_seconds === "number") {
          how.push([`after ${fmt.duration(ended.duration_seconds)}`]);
        }
      }
      const line = ["This channel has ended"];
      how.forEach((part, n) => line.push(n ? " · " : ": ", ...part));
      show(status, how.length ? line : [...line, "."]);
      status.hidden = false;
    }
    const sections = [];
    for (const [title, fields] of SECTIONS) {
      const rows = [];
      for (const [name, label, value] of fields) {
        const shown = value(item, this);
        if (!plain(shown)) continue;
        const dt = document.createElement("dt");
        dt.textContent = label;
        const dd = document.createElement("dd");
        dd.dataset.field = name;
        const other = name === "other_leg" && keyOf(item, item.other_leg);
        if (other && this.store.items.has(other)) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "link";
          button.dataset.select = other;
          show(button, shown);
          button.title = "Show the other leg";
          dd.append(button);
        } else {
          show(dd, shown);
        }
        rows.push(dt, dd);
      }
      if (!rows.length) continue;
      const section = document.createElement("section");
      const h3 = document.createElement("h3");
      h3.textContent = title;
      const dl = document.createElement("dl");
      dl.append(...rows);
      section.append(h3, dl);
      sections.push(section);
    }
    body.replaceChildren(...sections);
  }

  // The duration ticks every second without a full render.
  tick() {
    if (!this.key || !this.live) return;
    const dd = this.el("details-body").querySelector('dd[data-field="duration"]');
    const item = this.store.items.get(this.key);
    if (dd && item) show(dd, fmt.duration(this.store.duration(item)));
  }
}
