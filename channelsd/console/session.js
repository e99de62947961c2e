// Sign-in: the token lives in sessionStorage (this tab only); the account ids typed before
// are remembered in localStorage to prefill the next sign-in. No token is ever stored there.

import { Api, ApiError, enc } from "./api.js";

const SESSION_KEY = "channelsd.console.session";
const ACCOUNT_KEY = "channelsd.console.account";
const ACCOUNTS_KEY = "channelsd.console.accounts";
// A filter no channel matches: a cheap way to ask "may this token list here?".
const PROBE = "?filter_uuid=-";

function read(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

function write(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the console still works for this page's life
  }
}

export function savedSession() {
  const s = read(sessionStorage, SESSION_KEY, null);
  return s && typeof s.token === "string" && s.token ? s : null;
}

export function saveSession(session) {
  write(sessionStorage, SESSION_KEY, session);
  if (session.account) {
    write(localStorage, ACCOUNT_KEY, session.account);
    rememberAccount(session.account);
  }
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

export function lastAccount() {
  return read(localStorage, ACCOUNT_KEY, "");
}

export function knownAccounts() {
  const list = read(localStorage, ACCOUNTS_KEY, []);
  return Array.isArray(list) ? list.filter((a) => typeof a === "string" && a) : [];
}

export function rememberAccount(account) {
  const list = knownAccounts().filter((a) => a !== account);
  list.unshift(account);
  write(localStorage, ACCOUNTS_KEY, list.slice(0, 20));
}

export async function probeAccount(api, account) {
  await api.get(`/v2/accounts/${enc(account)}/channels${PROBE}`);
}

export async function probeScope(api, scope) {
  if (scope.mode === "system") await api.get(`/v2/channels${PROBE}`);
  else await probeAccount(api, scope.account);
}

// Which stream this token may follow: every account (superduper) or the given one.
export async function signIn(token, account) {
  const api = new Api(token);
  try {
    await api.get(`/v2/channels${PROBE}`);
    return { token, account, mode: "system" };
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 403) throw err;
    if (!account) {
      const needAccount = new Error(
        `${err.message}. This token cannot list every account: enter the account id it belongs to.`,
      );
      needAccount.field = "account";
      throw needAccount;
    }
  }
  await probeAccount(api, account);
  return { token, account, mode: "account" };
}
