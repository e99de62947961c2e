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
