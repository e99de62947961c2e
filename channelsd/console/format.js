// How channel fields read on the page. Functions that quote the switch return lines (dom.js):
// our own words as strings, the switch's values as val(...), shown by dom.show / dom.label.

import { val } from "./dom.js";

const str = (v) => (typeof v === "string" || typeof v === "number" ? String(v) : "");

export function party(name, number) {
  const n = str(name);
  const num = str(number);
  if (n && num && n !== num) return [val(n), " (", val(num), ")"];
  return n || num ? [val(n || num)] : [];
}

export function caller(item) {
  const found = party(item.caller_id_name, item.caller_id_number);
  return found.length ? found : ["unknown"];
}

export function callee(item) {
  const found = party(item.callee_id_name, item.callee_id_number);
  if (found.length) return found;
  return str(item.destination) ? [val(item.destination)] : ["unknown"];
}

export function state(item) {
  return [val(str(item.call_state) || str(item.state))];
}

export function account(item, names) {
  const id = str(item.account_id);
  if (!id) return [];
  return [val(str(item.realm) || (names && names.get(id)) || shortId(id))];
}

export function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 8)}…` : id || "";
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export function describe(item) {
  return [...caller(item), " → ", ...callee(item)];
}

// The states worth a badge on a board row: [text, kind, title].
export function flags(item) {
  const found = [];
  if (item.is_onhold) found.push(["on hold", "hold", "The channel is on hold"]);
  if (item.is_recording) found.push(["rec", "rec", "The switch is recording this channel"]);
  if (item.is_secure) found.push(["encrypted", "secure", "Its media is encrypted (SRTP/ZRTP)"]);
  return found;
}

// FreeSWITCH's sip_hangup_disposition, as a phrase that stands on its own ("NORMAL_CLEARING ·
// hung up by the far end"): "send" is the switch's side, "recv" the far end's; a refusal is a
// 4xx/5xx answer to the call, a cancel ends it while it rings.
const ENDINGS = {
  send_bye: "hung up by the switch",
  recv_bye: "hung up by the far end",
  send_cancel: "cancelled by the switch",
  recv_cancel: "cancelled by the far end",
  send_refuse: "refused by the switch",
  recv_refuse: "refused by the far end",
};

export function howEnded(item) {
  const d = typeof item.hangup_disposition === "string" ? item.hangup_disposition : "";
  if (!d) return [];
  return Object.hasOwn(ENDINGS, d) ? [ENDINGS[d]] : ["ended: ", val(d)];
}

export function codec(name, rate) {
  if (!str(name)) return [];
  return typeof rate === "number" && rate ? [val(name), ` ${rate / 1000} kHz`] : [val(name)];
}

export function hostPort(host, port) {
  const h = str(host);
  if (!h) return [];
  const shown = h.includes(":") ? ["[", val(h), "]"] : [val(h)];
  return str(port) ? [...shown, ":", val(port)] : shown;
}

// A Kazoo (Gregorian seconds) timestamp as this browser's time of day.
export function timeOfDay(gregorian, offset) {
  if (typeof gregorian !== "number") return "";
  return new Date((gregorian - offset) * 1000).toLocaleTimeString([], { hour12: false });
}
