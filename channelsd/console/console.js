// The operator console: sign in, follow the live channels, act on them.

import { ActionDialog } from "./actions.js";
import { Api, routes } from "./api.js";
import { DetailsPanel } from "./details.js";
import { label, show, val } from "./dom.js";
import { EndedCalls, EndedView } from "./ended.js";
import { shortId } from "./format.js";
import { LiveStream } from "./live.js";
import * as session from "./session.js";
import { ChannelStore, keyOf } from "./store.js";
import { ChannelsView } from "./view.js";

const $ = (id) => document.getElementById(id);
const OTHER = "__other__";

const state = { session: null, scope: null, api: null, live: null, liveState: "", endedLoad: 0 };
const store = new ChannelStore();
const endedCalls = new EndedCalls();

const view = new ChannelsView({
  table: $("channels"),
  empty: $("empty"),
  counts: $("counts"),
  store,
  onAction: (key, button) => actions.open(key, button),
  onSelect: (key) => selectChannel(key),
  onFocusLost: () => $("filter").focus(),
});

const endedView = new EndedView({
  list: $("ended-list"),
  empty: $("ended-empty"),
  count: $("ended-count"),
  ended: endedCalls,
  matches: (item) => view.matches(item),
  onSelect: (key) => selectChannel(key),
});

const details = new DetailsPanel({
  root: $("details"),
  store,
  ended: endedCalls,
  api: () => state.api,
  scope: () => state.scope,
  onSelect: (key) => selectChannel(key),
  onClose: () => selectChannel(null),
});

// One channel's details are open at a time; its row (or ended entry) is marked. A channel is
// named by its key (store.keyOf): node and uuid.
function selectChannel(key) {
  view.setSelected(key);
  endedView.setSelected(key);
  if (key) details.show(key);
  else details.clear();
}

const actions = new ActionDialog({
  dialog: $("action-dialog"),
  store,
  api: () => state.api,
  scope: () => state.scope,
  onDone: (message) => toast(message),
  onAuthLost: (message) => signOut([val(message), ": sign in again."]),
  fallbackFocus: () => $("filter").focus(),
});

// -- banner and notices -----------------------------------------------------------------------

let bannerTimer = null;
let toastTimer = null;

function banner(kind, line, hideAfterMs) {
  const el = $("banner");
  clearTimeout(bannerTimer);
  show(el, line);
  const text = el.textContent;
  el.dataset.kind = kind;
  if (text && hideAfterMs) bannerTimer = setTimeout(() => banner("", ""), hideAfterMs);
}

function toast(line) {
  const notice = $("notice");
  clearTimeout(toastTimer);
  show(notice, line);
  toastTimer = setTimeout(() => show(notice, ""), 5000);
}

function showLiveState(liveState, detail = {}) {
  state.liveState = liveState;
  const indicator = $("live-state");
  indicator.dataset.state = liveState;
  indicator.textContent = {
    connecting: "Connecting…",
    live: "Live",
    down: "Reconnecting…",
    failed: "Stopped",
  }[liveState];
  $("board").classList.toggle("not-live", liveState === "down" || liveState === "failed");
  if (liveState === "live") {
    if (detail.recovered) {
      banner("ok", "Live updates are back: the table caught up with what was missed.", 6000);
    } else if ($("banner").dataset.kind !== "ok") {
      banner("", "");
    }
  } else if (liveState === "down") {
    banner("warn", "Live updates interrupted: reconnecting… The table may be out of date.");
  } else if (liveState === "failed") {
    const err = detail.error;
    if (err && err.status === 401) signOut([val(err.message), ": sign in again."]);
    else banner("error", ["Live updates stopped: ", err ? val(err.message) : "unknown error"]);
  }
}

// -- the stream -------------------------------------------------------------------------------

function onEvent(kind, data) {
  if (kind === "snapshot") {
    store.reset(Array.isArray(data) ? data : []);
    // A snapshot starts over (first connection, or too much missed): so do ended calls.
    loadEnded();
  } else if (kind === "create") store.put(data);
  else if (kind === "update") store.patch(keyOf(data), data.changed || {}, data.removed);
  else if (kind === "destroy") endedCalls.add(store.remove(keyOf(data)), data, store.serverNow());
}

async function loadEnded() {
  const load = ++state.endedLoad;
  const { api, scope } = state;
  let items;
  try {
    items = await api.get(`${routes(scope).list}?ended=true`);
  } catch {
    return; // this daemon keeps none (503), or a passing error: the stream still feeds them
  }
  if (load !== state.endedLoad || !Array.isArray(items)) return;
  // Destroys heard while the list was on its way are newer than it.
  const listed = new Set(items.filter((j) => j && j.uuid).map((j) => keyOf(j)));
  const heard = endedCalls.items.filter((i) => !listed.has(keyOf(i)));
  endedCalls.reset([...heard, ...items]);
}

function connect() {
  if (state.live) state.live.stop();
  store.reset([]);
  state.endedLoad += 1;
  endedCalls.reset([]);
  selectChannel(null);
  const { api, scope } = state;
  state.live = new LiveStream({
    url: routes(scope).events,
    token: state.session.token,
    probe: () => session.probeScope(api, scope),
    onEvent,
    onState: showLiveState,
  });
  state.live.start();
}

// -- accounts ---------------------------------------------------------------------------------

let accountsShown = "";

// An <option>'s text: plain text, the switch's realm isolated by characters (dom.label).
function accountLabel(id, realm) {
  return label(realm ? [val(realm), " (", val(shortId(id)), ")"] : [val(id)]);
}

function fillAccounts() {
  const select = $("account-select");
  const realms = store.accounts();
  let options;
  if (state.scope.mode === "system") {
    const ids = [...realms.keys()].sort((a, b) =>
      accountLabel(a, realms.get(a)).localeCompare(accountLabel(b, realms.get(b))),
    );
    if (view.account && !ids.includes(view.account)) ids.unshift(view.account);
    options = [["", "All accounts"], ...ids.map((id) => [id, accountLabel(id, realms.get(id))])];
  } else {
    const ids = [state.scope.account, ...session.knownAccounts()];
    const unique = [...new Set(ids)];
    options = [
      ...unique.map((id) => [id, accountLabel(id, realms.get(id))]),
      [OTHER, "Other account…"],
    ];
  }
  const signature = JSON.stringify(options);
  if (signature === accountsShown) return;
  accountsShown = signature;
  const current = state.scope.mode === "system" ? view.account : state.scope.account;
  select.replaceChildren(
    ...options.map(([value, text]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      return option;
    }),
  );
  select.value = current;
}

function onAccountChange() {
  const select = $("account-select");
  if (state.scope.mode === "system") {
    view.setAccount(select.value);
    endedView.render();
    return;
  }
  if (select.value === OTHER) {
    select.value = state.scope.account;
    $("add-account").hidden = false;
    $("add-account-id").focus();
    return;
  }
  switchAccount(select.value);
}

function switchAccount(account) {
  state.scope = { mode: "account", account };
  state.session = { ...state.session, account };
  session.saveSession(state.session);
  accountsShown = "";
  fillAccounts();
  connect();
}

async function onAddAccount(e) {
  e.preventDefault();
  const input = $("add-account-id");
  const error = $("add-account-error");
  const account = input.value.trim();
  if (!account) return;
  error.hidden = true;
  try {
    await session.probeAccount(state.api, account);
  } catch (err) {
    show(error, [`Cannot show ${account}: `, val(err.message)]);
    error.hidden = false;
    input.focus();
    return;
  }
  input.value = "";
  $("add-account").hidden = true;
  session.rememberAccount(account);
  switchAccount(account);
  $("account-select").focus();
}

// -- sign in and out --------------------------------------------------------------------------

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("session").hidden = false;
  $("add-account").hidden = true;
  accountsShown = "";
  view.setAccount("");
  fillAccounts();
  connect();
}

function signOut(message) {
  if (state.live) state.live.stop();
  state.live = null;
  state.session = null;
  session.clearSession();
  store.reset([]);
  endedCalls.reset([]);
  selectChannel(null);
  banner("", "");
  $("board").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-token").value = "";
  $("login-account").value = session.lastAccount();
  const error = $("login-error");
  show(error, message || "");
  error.hidden = !error.textContent;
  $("login-token").focus();
}

async function onLogin(e) {
  e.preventDefault();
  const token = $("login-token").value.trim();
  const account = $("login-account").value.trim();
  const error = $("login-error");
  if (!token) {
    show(error, "Enter an API token.");
    error.hidden = false;
    $("login-token").focus();
    return;
  }
  $("login-submit").disabled = true;
  error.hidden = true;
  try {
    start(await session.signIn(token, account));
  } catch (err) {
    show(error, err.status === 401 ? "This token was refused." : val(err.message));
    error.hidden = false;
    $(err.field === "account" ? "login-account" : "login-token").focus();
  } finally {
    $("login-submit").disabled = false;
  }
}

function start(s) {
  state.session = s;
  state.api = new Api(s.token);
  state.scope = s.mode === "system" ? { mode: "system" } : { mode: "account", account: s.account };
  session.saveSession(s);
  showBoard();
  $("filter").focus();
}

// -- wiring -----------------------------------------------------------------------------------

$("login-form").addEventListener("submit", onLogin);
$("logout").addEventListener("click", () => signOut(""));
$("filter").addEventListener("input", (e) => {
  view.setFilter(e.target.value);
  endedView.render();
});
$("account-select").addEventListener("change", onAccountChange);
$("add-account").addEventListener("submit", onAddAccount);
$("add-account-cancel").addEventListener("click", () => {
  $("add-account").hidden = true;
  $("account-select").focus();
});
store.subscribe(() => {
  if (state.scope) fillAccounts();
});
setInterval(() => {
  view.tick();
  details.tick();
}, 1000);

const saved = session.savedSession();
if (saved) start(saved);
else signOut("");
document.documentElement.dataset.ready = "true";
