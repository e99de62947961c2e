// How channel fields read on the page.

export function party(name, number) {
  if (name && number && name !== number) return `${name} (${number})`;
  return name || number || "";
}

export function caller(item) {
  return party(item.caller_id_name, item.caller_id_number) || "unknown";
}

export function callee(item) {
  return party(item.callee_id_name, item.callee_id_number) || item.destination || "unknown";
}

export function state(item) {
  return item.call_state || item.state || "";
}

export function account(item, names) {
  if (!item.account_id) return "";
  return item.realm || (names && names.get(item.account_id)) || shortId(item.account_id);
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
  return `${caller(item)} → ${callee(item)}`;
}

// The states worth a badge on a board row: [text, kind, title].
export function flags(item) {
  const found = [];
  if (item.is_onhold) found.push(["on hold", "hold", "The channel is on hold"]);
  if (item.is_recording) found.push(["rec", "rec", "The switch is recording this channel"]);
  if (item.is_secure) found.push(["encrypted", "secure", "Its media is encrypted (SRTP/ZRTP)"]);
  return found;
}

// FreeSWITCH's sip_hangup_disposition: "send" is the switch's side, "recv" the far end's.
const WHO = {
  send_bye: "switch",
  recv_bye: "far end",
  send_cancel: "switch (cancel)",
  recv_cancel: "far end (cancel)",
  send_refuse: "refused",
  recv_refuse: "refused by far end",
};

export function whoHungUp(item) {
  const d = typeof item.hangup_disposition === "string" ? item.hangup_disposition : "";
  return WHO[d] || d;
}

export function codec(name, rate) {
  if (!name) return "";
  return rate ? `${name} ${rate / 1000} kHz` : name;
}

export function hostPort(host, port) {
  if (!host) return "";
  const shown = host.includes(":") ? `[${host}]` : host;
  return port ? `${shown}:${port}` : shown;
}

// A Kazoo (Gregorian seconds) timestamp as this browser's time of day.
export function timeOfDay(gregorian, offset) {
  if (typeof gregorian !== "number") return "";
  return new Date((gregorian - offset) * 1000).toLocaleTimeString([], { hour12: false });
}
