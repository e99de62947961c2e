// The per-channel actions dialog: hang up, hold toggle, break, transfer, intercept, listen in.
// Destructive actions ask for confirmation; the API's refusal is shown as it says it.
//
// ACTIONS is the one list of what the dialog offers, in order: its choices are built from it.
// An action is { label, verb, done, request(fields) -> [method, body], and optionally
// confirm(item, fields) -> a line (dom.js), missing(fields) }, plus, when it takes input, a
// <div class="panel" data-panel="NAME"> in index.html whose named inputs fields() reads.

import { routes } from "./api.js";
import { show, val } from "./dom.js";
import * as fmt from "./format.js";
import { keyOf } from "./store.js";

const ACTIONS = {
  hangup: {
    label: "Hang up",
    verb: "Hang up",
    done: "Hang-up sent",
    confirm: (item, f) => [
      "Hang up ",
      ...fmt.describe(item),
      ` with cause ${f.cause || "NORMAL_CLEARING"}?`,
    ],
    request: (f) => ["POST", { data: { action: "hangup", cause: f.cause || "NORMAL_CLEARING" } }],
  },
  hold: {
    label: "Hold / unhold",
    verb: "Toggle hold",
    done: "Hold toggled",
    request: () => [
      "PUT",
      { action: "metaflow", data: { module: "hold_control", data: { action: "toggle" } } },
    ],
  },
  break: {
    label: "Break",
    verb: "Break",
    done: "Break sent",
    request: (f) => ["POST", { data: { action: "break", all: f.all } }],
  },
  transfer: {
    label: "Transfer",
    verb: "Transfer",
    done: "Transfer sent",
    missing: (f) => (f.target ? "" : "Enter the extension to transfer to."),
    confirm: (item, f) => [
      `${f.transfer_type === "attended" ? "Attended" : "Blind"} transfer of ` +
        `${f.leg === "bleg" ? "the other leg" : "this channel"} of `,
      ...fmt.describe(item),
      ` to ${f.target}?`,
    ],
    request: (f) => [
      "POST",
      { data: { action: "transfer", target: f.target, transfer_type: f.transfer_type, leg: f.leg } },
    ],
  },
  intercept: {
    label: "Intercept",
    verb: "Intercept",
    done: "Intercept started",
    missing: (f) => (f.target_id ? "" : "Enter the device, user id or number that picks up."),
    confirm: (item, f) => [`Have ${f.target_type} ${f.target_id} pick up `, ...fmt.describe(item), "?"],
    request: (f) => [
      "POST",
      { data: { action: "intercept", target_type: f.target_type, target_id: f.target_id } },
    ],
  },
  eavesdrop: {
    label: "Listen in",
    verb: "Listen in",
    done: "Listen-in started",
    missing: (f) => (f.listen_id ? "" : "Enter the device, user id or number that listens in."),
    confirm: (item, f) => {
      const how =
        f.listen_mode === "whisper"
          ? `whisper to ${f.whisper_leg === "peer" ? "the other leg" : "this channel"} of`
          : f.listen_mode === "barge"
            ? "barge into"
            : "listen to";
      return [`Ring ${f.listen_type} ${f.listen_id} to ${how} `, ...fmt.describe(item), "?"];
    },
    // whisper_leg only with whisper: the API refuses it with the other modes.
    request: (f) => [
      "POST",
      {
        data: {
          action: "eavesdrop",
          target_type: f.listen_type,
          target_id: f.listen_id,
          mode: f.listen_mode,
          ...(f.listen_mode === "whisper" ? { whisper_leg: f.whisper_leg } : {}),
        },
      },
    ],
  },
};

export class ActionDialog {
  constructor({ dialog, store, api, scope, onDone, onAuthLost, fallbackFocus }) {
    this.dialog = dialog;
    this.form = dialog.querySelector("form");
    this.store = store;
    this.api = api;
    this.scope = scope;
    this.onDone = onDone;
    this.onAuthLost = onAuthLost;
    this.fallbackFocus = fallbackFocus;
    this.el = (id) => dialog.querySelector(`#${id}`);
    this.item = null;
    this.opener = null;
    this.stage = "edit";
    this.busy = false;
    this.buildChoices();

    this.form.addEventListener("change", (e) => {
      if (e.target.name === "action") this.choose(e.target.value);
      else this.toEdit();
      if (e.target.name === "listen_mode") this.syncWhisper();
    });
    this.form.addEventListener("input", () => this.toEdit());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.el("action-cancel").addEventListener("click", () => {
      if (this.stage === "confirm") {
        this.toEdit();
        this.el("action-submit").focus();
      } else {
        dialog.close();
      }
    });
    dialog.addEventListener("close", () => this.restoreFocus());
    store.subscribe(() => this.refresh());
  }

  buildChoices() {
    const fieldset = this.el("action-choices");
    for (const [name, spec] of Object.entries(ACTIONS)) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "action";
      input.value = name;
      input.defaultChecked = name === "hangup";
      label.append(input, ` ${spec.label}`);
      fieldset.append(label);
    }
  }

  // The dialog for the channel of this key (store.keyOf).
  open(key, opener) {
    const item = this.store.items.get(key);
    if (!item) return;
    this.item = item;
    this.opener = opener;
    this.form.reset();
    this.setText("action-subject", [...fmt.describe(item), " · ", val(item.uuid)]);
    this.syncWhisper();
    this.choose("hangup");
    this.dialog.showModal();
    this.form.querySelector('input[name="action"]:checked').focus();
  }

  get action() {
    return this.form.elements.action.value;
  }

  fields() {
    const f = this.form.elements;
    return {
      cause: f.cause.value.trim(),
      all: f.all.checked,
      target: f.target.value.trim(),
      transfer_type: f.transfer_type.value,
      leg: f.leg.value,
      target_type: f.target_type.value,
      target_id: f.target_id.value.trim(),
      listen_type: f.listen_type.value,
      listen_id: f.listen_id.value.trim(),
      listen_mode: f.listen_mode.value,
      whisper_leg: f.whisper_leg.value,
    };
  }

  choose(action) {
    for (const panel of this.dialog.querySelectorAll("[data-panel]")) {
      panel.hidden = panel.dataset.panel !== action;
    }
    this.toEdit();
    this.show("action-error", "");
    this.show("action-done", "");
    if (action === "hold" && this.item) {
      this.setText(
        "hold-help",
        this.item.is_onhold
          ? "The channel is on hold: this takes it off hold."
          : "The channel is not on hold: this puts it on hold.",
      );
    }
  }

  // "Whisper to" only means something in whisper mode.
  syncWhisper() {
    this.el("whisper-leg").disabled = this.form.elements.listen_mode.value !== "whisper";
  }

  toEdit() {
    if (this.busy) return;
    this.stage = "edit";
    const spec = ACTIONS[this.action];
    this.show("action-confirm", "");
    this.el("action-choices").disabled = false;
    this.setText("action-submit", spec.confirm ? `${spec.verb}…` : spec.verb);
    this.el("action-submit").classList.toggle("danger", false);
    this.setText("action-cancel", "Cancel");
  }

  submit() {
    if (this.busy || !this.item) return;
    const spec = ACTIONS[this.action];
    const fields = this.fields();
    const missing = spec.missing && spec.missing(fields);
    if (missing) {
      this.show("action-error", missing);
      return;
    }
    if (spec.confirm && this.stage === "edit") {
      this.stage = "confirm";
      this.show("action-error", "");
      this.show("action-confirm", spec.confirm(this.item, fields));
      this.setText("action-submit", `Yes, ${spec.verb.toLowerCase()}`);
      this.el("action-submit").classList.add("danger");
      this.setText("action-cancel", "Back");
      this.el("action-submit").focus();
      return;
    }
    this.send(spec, fields);
  }

  async send(spec, fields) {
    const item = this.item;
    const [method, body] = spec.request(fields);
    const path = routes(this.scope()).channel(item.account_id, item.uuid);
    this.setBusy(true);
    this.show("action-error", "");
    try {
      await this.api().request(method, path, body);
    } catch (err) {
      this.setBusy(false);
      if (err.status === 401) {
        this.dialog.close();
        this.onAuthLost(err.message);
        return;
      }
      this.toEdit();
      this.show("action-error", ["Refused: ", val(err.message)]);
      this.el("action-submit").focus();
      return;
    }
    this.setBusy(false);
    this.dialog.close();
    this.onDone([`${spec.done}: `, ...fmt.describe(item)]);
  }

  setBusy(busy) {
    this.busy = busy;
    this.form.setAttribute("aria-busy", String(busy));
    this.el("action-submit").disabled = busy;
    this.el("action-choices").disabled = busy;
  }

  // The channel may change or end while the dialog is open.
  refresh() {
    if (!this.item || !this.dialog.open) return;
    const now = this.store.items.get(keyOf(this.item));
    if (now) {
      this.item = now;
      return;
    }
    if (!this.busy) {
      this.show("action-error", "This channel has ended.");
      this.el("action-submit").disabled = true;
    }
  }

  restoreFocus() {
    const opener = this.opener;
    this.item = null;
    this.el("action-submit").disabled = false;
    if (opener && opener.isConnected && !opener.disabled) opener.focus();
    else this.fallbackFocus();
  }

  setText(id, line) {
    show(this.el(id), line);
  }

  show(id, line) {
    const el = this.el(id);
    show(el, line);
    el.hidden = !el.textContent;
  }
}
