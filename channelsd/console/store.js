// The live channel table as the page knows it, fed by the event stream, and grouped into calls.

export const GREGORIAN_OFFSET = 62167219200; // Kazoo's timestamps count from year 0

// What names a channel: its node and its uuid. A uuid is unique on its switch only (an
// originate may choose it), so two nodes can each have a channel with the same uuid; list
// items and every stream message carry both.
export function keyOf(item, uuid = item.uuid) {
  return JSON.stringify([typeof item.node === "string" ? item.node : "", String(uuid)]);
}

export class ChannelStore {
  constructor() {
    this.items = new Map();
    this.listeners = new Set();
    // Server clock minus browser clock, in seconds, so durations do not depend on the PC's clock.
    this.skew = 0;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    for (const fn of this.listeners) fn();
  }

  reset(items) {
    this.items = new Map(items.filter((i) => i && i.uuid).map((item) => [keyOf(item), item]));
    this.learnClock(items);
    this.changed();
  }

  put(item) {
    if (!item || !item.uuid) return;
    this.items.set(keyOf(item), item);
    this.learnClock([item]);
    this.changed();
  }

  patch(key, changed, removed) {
    const old = this.items.get(key);
    if (!old) return;
    const item = { ...old, ...changed };
    for (const name of removed || []) delete item[name];
    this.items.set(key, item);
    this.changed();
  }

  // The item as it last was, or undefined when it was not known.
  remove(key) {
    const item = this.items.get(key);
    if (this.items.delete(key)) this.changed();
    return item;
  }

  // The daemon's clock now, in Kazoo's Gregorian seconds.
  serverNow() {
    return Math.floor(Date.now() / 1000 + this.skew) + GREGORIAN_OFFSET;
  }

  learnClock(items) {
    const now = Date.now() / 1000;
    let best = null;
    for (const item of items) {
      if (typeof item.timestamp !== "number" || typeof item.elapsed_s !== "number") continue;
      const serverNow = item.timestamp - GREGORIAN_OFFSET + item.elapsed_s;
      const sample = serverNow - now;
      if (best === null || sample > best) best = sample;
    }
    if (best !== null) this.skew = best + 0.5;
  }

  // Seconds since the channel was created, ticking with the browser clock.
  duration(item) {
    if (typeof item.timestamp !== "number") return item.elapsed_s || 0;
    const start = item.timestamp - GREGORIAN_OFFSET;
    return Math.max(0, Math.floor(Date.now() / 1000 + this.skew - start));
  }

  accounts() {
    const found = new Map();
    for (const item of this.items.values()) {
      if (item.account_id && !found.has(item.account_id)) {
        found.set(item.account_id, item.realm || "");
      } else if (item.account_id && item.realm && !found.get(item.account_id)) {
        found.set(item.account_id, item.realm);
      }
    }
    return found;
  }

  // Channels grouped by call: legs that share a bridge_id or name each other as other_leg,
  // on the same node (both name channels of their own switch). A call's id is its first
  // leg's key.
  calls() {
    const parent = new Map();
    const find = (x) => {
      while (parent.get(x) !== x) {
        parent.set(x, parent.get(parent.get(x)));
        x = parent.get(x);
      }
      return x;
    };
    const union = (a, b) => {
      const ra = find(a);
      const rb = find(b);
      if (ra !== rb) parent.set(ra, rb);
    };
    const byBridge = new Map();
    for (const key of this.items.keys()) parent.set(key, key);
    for (const [key, item] of this.items) {
      const other = item.other_leg && keyOf(item, item.other_leg);
      if (other && this.items.has(other)) union(key, other);
      const bridge = item.bridge_id && keyOf(item, item.bridge_id);
      if (bridge) {
        if (byBridge.has(bridge)) union(key, byBridge.get(bridge));
        else byBridge.set(bridge, key);
      }
    }
    const groups = new Map();
    for (const [key, item] of this.items) {
      const root = find(key);
      if (!groups.has(root)) groups.set(root, []);
      groups.get(root).push(item);
    }
    const calls = [];
    for (const legs of groups.values()) {
      legs.sort(byAge);
      calls.push({ id: keyOf(legs[0]), legs });
    }
    return calls;
  }
}

// Oldest first; within one second the inbound leg (the caller's) before the outbound one.
export function byAge(a, b) {
  const inbound = (x) => (x.direction === "inbound" ? 0 : 1);
  return (
    (a.timestamp || 0) - (b.timestamp || 0) ||
    inbound(a) - inbound(b) ||
    (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0) ||
    ((a.node || "") < (b.node || "") ? -1 : 1)
  );
}
