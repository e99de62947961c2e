// The channel_events stream (Server-Sent Events), kept open and resumed after a drop.
//
// The browser's EventSource reconnects by itself after a network drop and sends
// Last-Event-ID, so the daemon replays what was missed. When the browser gives up (an HTTP
// error, or the daemon answered something other than a stream), we start a new EventSource
// with ?last_event_id= after a pause, first checking the token is still accepted.

const KINDS = ["snapshot", "create", "update", "destroy"];

export class LiveStream {
  // onEvent(kind, data); onState(state, detail): "connecting" | "live" | "down" | "failed"
  constructor({ url, token, probe, onEvent, onState }) {
    this.url = url;
    this.token = token;
    this.probe = probe;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.source = null;
    this.timer = null;
    this.failures = 0;
    this.stopped = false;
    this.wasDown = false;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  open() {
    const params = new URLSearchParams({ auth_token: this.token });
    if (this.lastId !== null) params.set("last_event_id", this.lastId);
    const source = new EventSource(`${this.url}?${params}`);
    this.source = source;
    this.onState(this.wasDown ? "down" : "connecting");
    source.addEventListener("open", () => {
      if (source !== this.source) return;
      this.failures = 0;
      this.onState("live", { recovered: this.wasDown });
      this.wasDown = false;
    });
    source.addEventListener("error", () => {
      if (source !== this.source || this.stopped) return;
      this.wasDown = true;
      if (source.readyState === EventSource.CLOSED) {
        this.onState("down");
        this.retryLater();
      } else {
        this.onState("down");
      }
    });
    for (const kind of KINDS) {
      source.addEventListener(kind, (e) => {
        if (source !== this.source) return;
        if (e.lastEventId) this.lastId = e.lastEventId;
        let data;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        this.onEvent(kind, data);
      });
    }
  }

  retryLater() {
    this.source.close();
    this.source = null;
    const delay = Math.min(15000, 1000 * 2 ** this.failures);
    this.failures += 1;
    this.timer = setTimeout(() => this.recheck(), delay);
  }

  async recheck() {
    if (this.stopped) return;
    try {
      await this.probe();
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        this.stop();
        this.onState("failed", { error: err });
        return;
      }
      // Not reachable yet, or a passing error: try again later.
      this.timer = setTimeout(() => this.recheck(), Math.min(15000, 1000 * 2 ** this.failures++));
      return;
    }
    if (!this.stopped) this.open();
  }
}
