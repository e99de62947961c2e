// Calls to channelsd's /v2 API with the session token, and readable error messages.

export class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }
}

// One line out of Kazoo's error envelope: the message, and for a validation error
// each field with what is wrong with it.
export function describeError(status, body) {
  if (!body || typeof body !== "object") {
    return status ? `HTTP ${status}` : "the daemon could not be reached";
  }
  const message = body.message || `HTTP ${status}`;
  const data = body.data;
  if (message === "validation error" && data && typeof data === "object") {
    const parts = [];
    for (const [field, rules] of Object.entries(data)) {
      if (rules && typeof rules === "object") {
        for (const [rule, info] of Object.entries(rules)) {
          parts.push(`${field}: ${(info && info.message) || rule}`);
        }
      } else {
        parts.push(`${field}: ${rules}`);
      }
    }
    return parts.length ? `${message}: ${parts.join("; ")}` : message;
  }
  if (data && typeof data === "object" && !Array.isArray(data)) {
    const detail = data.reason || (data.message !== message ? data.message : "");
    if (detail) return `${message}: ${detail}`;
  }
  if (typeof data === "string" && data) return `${message} (${data})`;
  return message;
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { "X-Auth-Token": this.token, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch {
      throw new ApiError(0, null);
    }
    let parsed = null;
    try {
      parsed = await resp.json();
    } catch {
      parsed = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, parsed);
    return parsed ? parsed.data : null;
  }

  get(path) {
    return this.request("GET", path);
  }
}

export const enc = encodeURIComponent;

// The list and stream routes of a scope: every account, or one account.
export function routes(scope) {
  const base = scope.mode === "system" ? "/v2" : `/v2/accounts/${enc(scope.account)}`;
  return {
    list: `${base}/channels`,
    events: `${base}/channel_events`,
    channel: (account, uuid) => `/v2/accounts/${enc(account)}/channels/${enc(uuid)}`,
  };
}
