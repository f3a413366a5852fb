/**
 * A Server-Sent Events parser that follows the HTML spec's "event stream interpretation"
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
 * for streams read with `fetch` (EventSource cannot POST).
 *
 * - Lines end with CRLF, LF or CR; a CR at the end of one chunk and an LF at the start of
 *   the next are one line ending.
 * - `data` lines are joined with "\n"; an event with no data is not dispatched.
 * - Lines starting with ":" are comments (keep-alive pings); they are reported, never dispatched.
 * - `id` sets the last event id (ignored if it contains NUL) and it persists across events.
 * - `retry` is honoured only when it is all ASCII digits.
 * - A leading BOM is dropped; an unterminated event at the end of the stream is discarded.
 */

/**
 * @typedef {{type: string, data: string, lastEventId: string}} SseEvent
 * @typedef {{
 *   onEvent?: (event: SseEvent) => void,
 *   onComment?: (text: string) => void,
 *   onRetry?: (ms: number) => void,
 * }} SseHandlers
 */

export class SseParser {
  /** @param {SseHandlers} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    this.lastEventId = "";
    this.buffer = "";
    this.data = "";
    this.eventType = "";
    this.started = false;
    this.pendingCR = false;
  }

  /**
   * Feed decoded text; complete lines are interpreted at once.
   * @param {string} text
   */
  feed(text) {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") continue;
      this.line(this.buffer.slice(start, i));
      if (ch === "\r") {
        if (i + 1 === this.buffer.length) this.pendingCR = true;
        else if (this.buffer[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  /** @param {string} line */
  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) {
      this.handlers.onComment?.(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.handlers.onRetry?.(Number.parseInt(value, 10));
        break;
      default: // unknown fields are ignored, as the spec says
    }
  }

  dispatch() {
    const type = this.eventType || "message";
    const data = this.data;
    this.eventType = "";
    this.data = "";
    if (data === "") return;
    this.handlers.onEvent?.({ type, data: data.slice(0, -1), lastEventId: this.lastEventId });
  }
}

/**
 * Read a `fetch` body to its end, feeding a parser.
 * Rejects with the reader's error (a network failure, or an AbortError when stopped).
 * @param {ReadableStream<Uint8Array>} body
 * @param {SseParser} parser
 */
export async function pump(body, parser) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
    parser.feed(decoder.decode());
  } finally {
    reader.releaseLock();
  }
}
