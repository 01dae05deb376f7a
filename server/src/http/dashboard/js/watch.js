// The live feed: GET /v1/watch as server-sent events, read with fetch() because EventSource
// cannot send the Authorization header (and the token must not go in the URL).
//
// The server sends a full `snapshot` first, then one `change` per migration change, each with
// its version as the event id. On any break the stream reconnects with jittered exponential
// backoff and `?since=<last version seen>`, so it resumes from a snapshot no older than what the
// page already shows. A connection silent for longer than three server keep-alives (15 s each)
// is treated as dead: proxies can hold a socket open that no longer delivers anything.

import { authHeaders } from "./api.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15_000;
const SILENCE_LIMIT_MS = 45_000;

export class Watch {
  /**
   * @param {object} handlers
   *   onSnapshot({version, migrations}), onChange(migration),
   *   onStatus({state: "connecting"|"live"|"retrying", retryInMs?, error?}),
   *   onUnauthenticated()
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.since = 0;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  async loop() {
    let failures = 0;
    while (!this.stopped) {
      this.handlers.onStatus({ state: "connecting" });
      try {
        await this.connect(() => {
          failures = 0;
        });
        // The server ended the stream (e.g. it is shutting down): reconnect.
      } catch (error) {
        if (this.stopped) return;
        if (error.unauthenticated) {
          this.stopped = true;
          this.handlers.onUnauthenticated();
          return;
        }
        this.lastError = error;
      }
      if (this.stopped) return;
      failures += 1;
      // Full jitter: many dashboards reconnecting after a server restart do not stampede.
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures, 10));
      const delay = failures === 1 ? 200 : Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
      this.handlers.onStatus({ state: "retrying", retryInMs: delay, error: this.lastError });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  async connect(onOpen) {
    this.controller = new AbortController();
    const url = this.since > 0 ? `/v1/watch?since=${this.since}` : "/v1/watch";
    const response = await fetch(url, {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      signal: this.controller.signal,
      cache: "no-store",
    });
    if (response.status === 401) {
      throw Object.assign(new Error("token refused"), { unauthenticated: true });
    }
    if (response.status === 400 && this.since > 0) {
      // The server says our version is newer than anything it holds (its database was
      // restored): start over from its full snapshot rather than retrying forever.
      this.since = 0;
      throw new Error("the server's state is older than the page's; reloading its snapshot");
    }
    if (!response.ok || !response.body) {
      throw new Error(`watch answered HTTP ${response.status}`);
    }
    onOpen();
    this.handlers.onStatus({ state: "live" });
    await this.read(response.body);
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let silence = setTimeout(() => this.controller.abort(), SILENCE_LIMIT_MS);
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(silence);
        silence = setTimeout(() => this.controller.abort(), SILENCE_LIMIT_MS);
        buffer += value;
        // Lines end with \n, \r\n or \r (the SSE spec allows all three); the last piece may be
        // incomplete and waits for the next chunk.
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.data.length > 0) this.dispatch(event);
            event = { type: "message", data: [], id: null };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let value = colon < 0 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            if (field === "event") event.type = value;
            else if (field === "data") event.data.push(value);
            else if (field === "id") event.id = value;
          }
        }
      }
    } finally {
      clearTimeout(silence);
      reader.cancel().catch(() => {});
    }
  }

  dispatch({ type, data, id }) {
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    const version = Number(id);
    if (type === "snapshot") {
      this.handlers.onSnapshot(payload);
    } else if (type === "change") {
      this.handlers.onChange(payload);
    } else {
      return;
    }
    if (Number.isFinite(version) && version > this.since) this.since = version;
  }
}
