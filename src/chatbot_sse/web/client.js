/**
 * The HTTP side of the page: one chat turn over `POST /chat` as a stream of SSE events,
 * and a conversation's history.
 *
 * A turn ends in exactly one way, and `streamTurn` resolves or rejects accordingly:
 * - resolves `{content, conversationId, messageId}` on `event: completed`;
 * - rejects `ChatError` for an `event: error`, for a 4xx/5xx before the stream, or for a
 *   connection that dropped mid-reply and could not be resumed (`code: "connection_lost"`);
 * - rejects an `AbortError` when the caller's signal stopped it.
 * When the connection drops mid-reply the client waits the server's `retry` time and tries
 * once to resume with `GET /conversations/{id}/stream` and `Last-Event-ID`. A 200 stream goes
 * on where it stopped; a 204 (the reply has ended) or 410 (its events expired) settles the turn
 * from the stored message in the history; a 404 or 405 means the server cannot resume, and the
 * turn fails with a retryable error.
 * Every request goes through `authFetch`, which adds the API key (and asks for one on 401).
 */

import { authFetch } from "./auth.js";
import { SseParser, pump } from "./sse.js";

export class ChatError extends Error {
  /**
   * @param {string} code machine-readable code from the server (or a client-side one)
   * @param {string} message readable text for a person
   * @param {{retryable?: boolean, status?: number, partial?: string}} [options]
   */
  constructor(code, message, options = {}) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.status = options.status ?? 0;
    this.partial = options.partial ?? "";
  }
}

/**
 * @typedef {{
 *   onConnected?: (ids: {conversationId: string, messageId: string}) => void,
 *   onChunk?: (text: string, content: string) => void,
 *   onState?: (state: "connecting" | "streaming" | "reconnecting") => void,
 * }} TurnHandlers
 */

/**
 * Send one message and stream the reply.
 * @param {{message: string, conversationId: string | null, signal: AbortSignal}} request
 * @param {TurnHandlers} handlers
 * @returns {Promise<{content: string, conversationId: string, messageId: string}>}
 */
export async function streamTurn(request, handlers) {
  const turn = new Turn(handlers, request.conversationId);
  handlers.onState?.("connecting");
  const body = { message: request.message };
  if (request.conversationId) body.conversation_id = request.conversationId;
  const response = await fetchOrFail("/chat", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal: request.signal,
  });
  await expectStream(response);
  return finishTurn(turn, response, request.signal);
}

/**
 * Follow a conversation's reply in progress from its first event, as after a reload mid-reply:
 * `GET /conversations/{id}/stream` without `Last-Event-ID`. Resolves null when the server has
 * nothing to stream (204, or no resume support); otherwise like `streamTurn`. The server
 * streams its latest reply, which may be an old one: `onConnected` sees its id first, and the
 * caller aborts if it already has that message.
 * @param {{conversationId: string, signal: AbortSignal}} request
 * @param {TurnHandlers} handlers
 */
export async function followReply(request, handlers) {
  const turn = new Turn(handlers, request.conversationId);
  let response;
  try {
    response = await authFetch(`/conversations/${encodeURIComponent(request.conversationId)}/stream`, {
      headers: { Accept: "text/event-stream" },
      signal: request.signal,
    });
  } catch (err) {
    if (isAbort(err)) throw err;
    return null;
  }
  if (response.status !== 200 || !isEventStream(response) || !response.body) return null;
  return finishTurn(turn, response, request.signal);
}

/**
 * Read a turn's stream to its end, resuming once if the connection drops mid-reply.
 * @param {Turn} turn
 * @param {Response} response
 * @param {AbortSignal} signal
 */
async function finishTurn(turn, response, signal) {
  const handlers = turn.handlers;
  handlers.onState?.("streaming");
  if (await turn.read(response, signal)) return turn.result();

  // The stream ended without `completed` or `error`: try to resume, once.
  if (!turn.conversationId || !turn.parser.lastEventId) throw turn.lost();
  handlers.onState?.("reconnecting");
  await sleep(turn.retryMs, signal);
  let resumed;
  try {
    resumed = await authFetch(`/conversations/${encodeURIComponent(turn.conversationId)}/stream`, {
      headers: { Accept: "text/event-stream", "Last-Event-ID": turn.parser.lastEventId },
      signal,
    });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw turn.lost();
  }
  if (resumed.status === 204 || resumed.status === 410) return settleFromHistory(turn, signal);
  if (!resumed.ok || !isEventStream(resumed)) throw turn.lost();
  handlers.onState?.("streaming");
  if (await turn.read(resumed, signal)) return turn.result();
  throw turn.lost();
}

/**
 * The end of a turn whose events are gone, from its stored message.
 * @param {Turn} turn
 * @param {AbortSignal} signal
 */
async function settleFromHistory(turn, signal) {
  let stored;
  try {
    const messages = await fetchHistory(/** @type {string} */ (turn.conversationId), signal);
    stored = messages.find((m) => m.id === turn.messageId);
  } catch (err) {
    if (isAbort(err)) throw err;
  }
  if (!stored) throw turn.lost();
  turn.content = stored.content;
  if ((stored.status ?? "complete") === "complete") return turn.result();
  throw new ChatError(`reply_${stored.status}`, "The reply ended before it was finished.", {
    retryable: true,
    partial: stored.content,
  });
}

/**
 * Ask the server to stop generating a conversation's reply. Best effort: a reply may outlive
 * its connection (so that it can be resumed), so aborting the fetch alone may not stop it.
 * @param {string} conversationId
 */
export async function cancelReply(conversationId) {
  try {
    await authFetch(`/conversations/${encodeURIComponent(conversationId)}/cancel`, {
      method: "POST",
      keepalive: true,
    });
  } catch {
    // the server is unreachable or predates cancel: the abort is all we can do
  }
}

/** The state of one turn across its original stream and a resumed one. */
class Turn {
  /**
   * @param {TurnHandlers} handlers
   * @param {string | null} conversationId
   */
  constructor(handlers, conversationId) {
    this.handlers = handlers;
    this.conversationId = conversationId;
    this.messageId = "";
    this.content = "";
    this.retryMs = 3000;
    /** @type {{done: true} | {error: ChatError} | null} */
    this.outcome = null;
    this.parser = new SseParser({
      onEvent: (event) => this.onEvent(event),
      onRetry: (ms) => {
        this.retryMs = ms;
      },
    });
  }

  /**
   * Read one response to its end. True when the turn reached its end event.
   * @param {Response} response
   * @param {AbortSignal} signal
   */
  async read(response, signal) {
    try {
      await pump(/** @type {ReadableStream<Uint8Array>} */ (response.body), this.parser);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw abortError();
      if (!this.outcome) return false; // a network failure mid-reply
    }
    if (this.outcome && "error" in this.outcome) throw this.outcome.error;
    return this.outcome !== null;
  }

  /** @param {import("./sse.js").SseEvent} event */
  onEvent(event) {
    if (this.outcome) return; // nothing counts after the end event
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // not ours; the contract says data is one JSON line
    }
    switch (event.type) {
      case "connected":
        this.conversationId = data.conversation_id ?? this.conversationId;
        this.messageId = data.message_id ?? "";
        this.handlers.onConnected?.({ conversationId: this.conversationId ?? "", messageId: this.messageId });
        break;
      case "message":
        if (typeof data.content === "string") {
          this.content += data.content;
          this.handlers.onChunk?.(data.content, this.content);
        }
        break;
      case "completed":
        if (typeof data.content === "string") this.content = data.content;
        this.outcome = { done: true };
        break;
      case "error": {
        const e = data.error ?? {};
        this.outcome = {
          error: new ChatError(e.code ?? "error", e.message || "The reply failed.", {
            retryable: !!e.retryable,
            partial: this.content,
          }),
        };
        break;
      }
      default: // unknown event types are ignored, so the server can add some
    }
  }

  result() {
    return { content: this.content, conversationId: this.conversationId ?? "", messageId: this.messageId };
  }

  lost() {
    return new ChatError("connection_lost", "The connection was lost before the reply finished.", {
      retryable: true,
      partial: this.content,
    });
  }
}

/**
 * @typedef {{id: string, role: string, content: string, created_at: string, status?: string,
 *   meta?: {finish_reason?: string}}} StoredMessage
 */

/**
 * One page of a conversation's stored messages: the newest `limit` of those before `before`
 * (of all, without it), oldest first, and the `before` that asks for the page before this
 * one (null when this one starts at the first message).
 * @param {string} conversationId
 * @param {{limit: number, before?: number | null, signal?: AbortSignal}} page
 * @returns {Promise<{messages: StoredMessage[], nextBefore: number | null}>}
 */
export async function fetchHistoryPage(conversationId, { limit, before = null, signal }) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before !== null) query.set("before", String(before));
  const path = `/conversations/${encodeURIComponent(conversationId)}/history?${query}`;
  const response = await fetchOrFail(path, { headers: { Accept: "application/json" }, signal });
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  return {
    messages: Array.isArray(body.messages) ? body.messages : [],
    nextBefore: typeof body.next_before === "number" ? body.next_before : null,
  };
}

/**
 * A conversation's stored messages, oldest first.
 * @param {string} conversationId
 * @param {AbortSignal} [signal]
 * @returns {Promise<Array<{id: string, role: string, content: string, created_at: string, status?: string}>>}
 */
export async function fetchHistory(conversationId, signal) {
  const response = await fetchOrFail(`/conversations/${encodeURIComponent(conversationId)}/history`, {
    headers: { Accept: "application/json" },
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  return Array.isArray(body.messages) ? body.messages : [];
}

/**
 * Delete a conversation on the server, for good; resolves once it is gone (a 404 means it
 * already was). A reply it was still generating ends with the `error` event `deleted`.
 * @param {string} conversationId
 */
export async function deleteConversation(conversationId) {
  const response = await fetchOrFail(`/conversations/${encodeURIComponent(conversationId)}`, {
    method: "DELETE",
  });
  if (!response.ok && response.status !== 404) throw await errorFrom(response);
}

/** `fetch`, with network failures turned into a retryable ChatError. */
async function fetchOrFail(url, init) {
  try {
    return await authFetch(url, init);
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ChatError("network_error", "Can't reach the server. Check your connection.", { retryable: true });
  }
}

/** @param {Response} response */
async function expectStream(response) {
  if (!response.ok) throw await errorFrom(response);
  if (!isEventStream(response) || !response.body) {
    throw new ChatError("bad_response", "The server answered with something other than a stream.", {
      retryable: true,
      status: response.status,
    });
  }
}

/** @param {Response} response */
function isEventStream(response) {
  return (response.headers.get("Content-Type") ?? "").startsWith("text/event-stream");
}

/**
 * A ChatError from an error response: the server's `{"error": {code, message}}` when present.
 * @param {Response} response
 */
async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = "";
  try {
    const body = await response.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = typeof body.error.message === "string" ? body.error.message : "";
    }
  } catch {
    // not JSON: fall back to a message from the status
  }
  // 409 turn_in_progress: another tab's message is being answered; trying again soon works.
  const retryable =
    response.status >= 500 || response.status === 429 || response.status === 408 || code === "turn_in_progress";
  return new ChatError(code, message || statusText(response.status), { retryable, status: response.status });
}

/** @param {number} status */
function statusText(status) {
  if (status === 404) return "Not found on the server.";
  if (status === 413) return "The message is too long.";
  if (status === 422) return "The server did not accept this message.";
  if (status === 429) return "Too many requests. Wait a moment and try again.";
  if (status === 503) return "The server is busy or unavailable. Try again shortly.";
  return `The server answered with an error (HTTP ${status}).`;
}

/** @param {unknown} err */
export function isAbort(err) {
  return err instanceof DOMException && err.name === "AbortError";
}

function abortError() {
  return new DOMException("The turn was stopped.", "AbortError");
}

/**
 * @param {number} ms
 * @param {AbortSignal} signal
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError());
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(abortError());
      },
      { once: true },
    );
  });
}
