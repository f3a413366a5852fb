/**
 * The chat page: wires the composer, the transcript, the conversation list, the theme and
 * the connection indicator to the stream client.
 *
 * One turn at a time per tab. Stop (button or Esc) aborts the fetch and asks the server to
 * cancel the reply; switching conversation only stops reading a running turn (the server may
 * finish it, and the history will show it). The tab's active conversation survives a reload
 * (sessionStorage) and its messages are reloaded from the server's history.
 *
 * Tabs showing the same conversation keep up with each other: a turn another tab starts is
 * followed here as it streams, and a message sent here while following one replaces it, as
 * the server does (the other reply ends `superseded`, kept with what it had said). A tab
 * whose own turn was running when another tab wrote reloads the conversation once it ends.
 */

import {
  ChatError,
  cancelReply,
  deleteConversation,
  fetchHistoryPage,
  followReply,
  isAbort,
  streamTurn,
} from "./client.js";
import {
  activeConversation,
  getConversation,
  isRemoved,
  onChange,
  removeConversation,
  setActiveConversation,
  touchConversation,
} from "./conversations.js";
import { renderList as drawList } from "./conversation-list.js";
import {
  addAssistantMessage,
  addUserMessage,
  clearMessages,
  isEmpty,
  messageCount,
  prependMessages,
  scrollToEnd,
} from "./messages.js";
import {
  announce,
  autosize,
  closeSidebar,
  confirmDelete,
  hideNotice,
  setBusy,
  setConnection,
  showNotice,
  sidebarIsOpen,
  ui,
} from "./ui.js";

/** @typedef {keyof typeof import("./ui.js").CONNECTION_LABELS} ConnectionState */
/** @typedef {import("./client.js").StoredMessage} StoredMessage */

/** Messages shown when a conversation opens, and per "Show earlier messages". */
const HISTORY_PAGE = 100;
/** The most one page may hold (the server's limit). */
const MAX_PAGE = 1000;

const state = {
  /** @type {string | null} */ conversationId: activeConversation(),
  /** @type {AbortController | null} */ turn: null,
  /** the conversation of the running turn, once the server has named it */
  /** @type {string | null} */ turnConversation: null,
  /** @type {AbortController | null} */ loading: null,
  /** when this tab last saw its conversation's messages (ms), to notice other tabs' turns */
  syncedAt: 0,
  /** the running turn follows a reply another tab (or an earlier page) started */
  following: false,
  /** a followed turn this tab left to send a message that replaces it */
  /** @type {AbortController | null} */ replaced: null,
  /** another tab wrote to this conversation while a turn ran here: reload it after */
  stale: false,
  /** where the earlier messages not shown yet end (the server's `next_before`), if any */
  /** @type {number | null} */ nextBefore: null,
};

/** Redraw the conversation list around this tab's conversation. */
function renderList() {
  drawList(state.conversationId, {
    open: (id) => {
      closeSidebar(false);
      if (id !== state.conversationId) void openConversation(id);
      ui.input.focus();
    },
    remove: (id) => void deleteChat(id),
  });
}

/**
 * Delete a conversation on the server, once the person confirms, then from the list.
 * @param {string} id
 */
async function deleteChat(id) {
  const title = getConversation(id)?.title || "Untitled conversation";
  if (!(await confirmDelete(title))) return;
  try {
    await deleteConversation(id); // a reply it is still writing is stopped by the server
  } catch (err) {
    const message = err instanceof ChatError ? err.message : String(err);
    showNotice(`Couldn't delete “${title}”. ${message}`, {
      label: "Try again",
      run: () => void deleteChat(id),
    });
    return;
  }
  removeConversation(id);
  if (id === state.conversationId) newChat();
  renderList();
  announce(`Deleted “${title}”.`);
  ui.newChat.focus();
}

// Another tab changed the list: redraw it, and reload our conversation if that tab added to it
// (once this tab's own turn, if one is running, has ended).
onChange(() => {
  renderList();
  if (state.conversationId && isRemoved(state.conversationId)) {
    newChat(); // deleted in another tab: it is gone from the server too
    showNotice("This conversation was deleted, so it was closed.");
    return;
  }
  const rec = state.conversationId ? getConversation(state.conversationId) : null;
  if (!rec || rec.updatedAt <= state.syncedAt) return;
  if (state.turn) state.stale = true;
  else void openConversation(rec.id, true);
});

/** A turn ended: clear it, and catch up with what other tabs wrote meanwhile. */
function endTurn() {
  state.turn = null;
  state.turnConversation = null;
  state.following = false;
  setBusy(false);
  if (state.stale) {
    state.stale = false;
    if (state.conversationId) void openConversation(state.conversationId, true);
  }
}

// ---- conversations -----------------------------------------------------------------------

/** Leave the running turn: the page stops reading it, the server may finish it. */
function leaveTurn() {
  state.turn?.abort();
}

/** Stop the running turn: stop reading it and ask the server to stop writing it. */
function stopTurn() {
  if (!state.turn) return;
  state.turn.abort();
  if (state.turnConversation) void cancelReply(state.turnConversation);
}

function newChat() {
  leaveTurn();
  state.loading?.abort();
  state.conversationId = null;
  setActiveConversation(null);
  clearMessages();
  showEarlier(null);
  hideNotice();
  ui.welcome.hidden = false;
  setConnection("idle");
  renderList();
}

/**
 * Show a stored conversation, its messages from the server's history.
 * @param {string} id
 * @param {boolean} [quiet] a refresh prompted by another tab: keep the scroll position
 */
async function openConversation(id, quiet = false) {
  if (!quiet) leaveTurn();
  state.loading?.abort();
  const loading = new AbortController();
  state.loading = loading;
  state.stale = false;
  state.conversationId = id;
  setActiveConversation(id);
  renderList();
  if (!quiet) {
    hideNotice();
    clearMessages();
    showEarlier(null);
    ui.welcome.hidden = true;
  }
  setConnection("loading");
  const startedAt = Date.now();
  try {
    // A refresh (another tab wrote) keeps what the tab showed, earlier pages it opened included,
    // and room for the new messages.
    const shown = quiet ? messageCount() + 10 : 0;
    const limit = Math.min(MAX_PAGE, Math.max(HISTORY_PAGE, shown));
    const page = await fetchHistoryPage(id, { limit, signal: loading.signal });
    if (loading.signal.aborted) return;
    const messages = page.messages;
    clearMessages();
    for (const m of messages) showStored(m);
    showEarlier(page.nextBefore);
    ui.welcome.hidden = !isEmpty();
    state.syncedAt = startedAt;
    setConnection("idle");
    if (!quiet) scrollToEnd(true);
    // A reply is being written (reloaded mid-reply, or another tab's turn): it is not stored
    // yet, so follow it live.
    if (messages.at(-1)?.role === "user") {
      void follow(id, new Set(messages.map((m) => m.id)), loading);
    }
  } catch (err) {
    if (isAbort(err) || loading.signal.aborted) return;
    if (err instanceof ChatError && err.status === 404) {
      removeConversation(id);
      newChat();
      showNotice("That conversation is no longer on the server, so it was removed from the list.");
      return;
    }
    setConnection("error");
    const message = err instanceof ChatError ? err.message : "The conversation could not be loaded.";
    showNotice(`Couldn't load this conversation. ${message}`, {
      label: "Try again",
      run: () => void openConversation(id),
    });
  } finally {
    if (state.loading === loading) state.loading = null;
  }
}

/** @param {StoredMessage} m */
function showStored(m) {
  if (m.role === "user") addUserMessage(m.content);
  else if (m.role === "assistant") {
    addAssistantMessage({ content: m.content, messageId: m.id, state: storedState(m) });
  }
}

/**
 * Offer the messages before the first one shown, if there are any.
 * @param {number | null} nextBefore
 */
function showEarlier(nextBefore) {
  state.nextBefore = nextBefore;
  ui.earlier.hidden = nextBefore === null;
}

/** Show the page of messages before the first one shown, above it. */
async function loadEarlier() {
  const id = state.conversationId;
  const before = state.nextBefore;
  if (!id || before === null) return;
  ui.earlier.disabled = true;
  try {
    const page = await fetchHistoryPage(id, { limit: HISTORY_PAGE, before });
    if (state.conversationId !== id || state.nextBefore !== before) return; // moved on meanwhile
    prependMessages(() => page.messages.forEach(showStored));
    showEarlier(page.nextBefore);
  } catch (err) {
    const message = err instanceof ChatError ? err.message : String(err);
    showNotice(`Couldn't load the earlier messages. ${message}`, {
      label: "Try again",
      run: () => void loadEarlier(),
    });
  } finally {
    ui.earlier.disabled = false;
  }
}

ui.earlier.addEventListener("click", () => void loadEarlier());

// ---- a turn ------------------------------------------------------------------------------

/**
 * How a stored reply is shown: `done`, or how it was cut short; one the user stopped (cancel)
 * is `stopped`, as it was when it happened.
 * @param {{ status?: string, meta?: { finish_reason?: string } }} message
 */
function storedState(message) {
  const status = message.status ?? "complete";
  if (status === "complete") return "done";
  const reason = message.meta?.finish_reason;
  if (status === "interrupted" && reason === "cancelled") return "stopped";
  if (status === "interrupted" && reason === "superseded") return "superseded";
  return status;
}

/**
 * Show a reply the server is still writing for this conversation (after a reload mid-reply).
 * Quietly does nothing when there is none, or the server cannot stream it again.
 * @param {string} conversationId
 * @param {Set<string>} known ids of the messages already shown
 * @param {AbortController} loading the history load this belongs to
 */
async function follow(conversationId, known, loading) {
  if (state.turn || loading.signal.aborted || state.conversationId !== conversationId) return;
  const turn = new AbortController();
  state.turn = turn;
  state.turnConversation = conversationId;
  state.following = true;
  setBusy(true, true);
  /** @type {ReturnType<typeof addAssistantMessage> | null} */
  let reply = null;
  /** @type {"connecting" | "streaming" | "reconnecting" | null} */
  let connection = null; // shown once there is a reply to follow (it comes before `connected`)
  try {
    const result = await followReply(
      { conversationId, signal: turn.signal },
      {
        onConnected: ({ messageId }) => {
          if (known.has(messageId)) return turn.abort(); // an old reply, already shown
          reply = addAssistantMessage({ messageId });
          ui.welcome.hidden = true;
          if (connection) setConnection(connection);
          announce("The assistant is replying.");
        },
        onChunk: (_chunk, content) => reply?.setContent(content),
        onState: (name) => {
          connection = name;
          if (reply) setConnection(name);
        },
      },
    );
    if (result && reply) {
      reply.setContent(result.content);
      reply.finish("done");
      announce("Reply finished.");
    }
  } catch (err) {
    if (reply && isAbort(err)) reply.finish(state.replaced === turn ? "superseded" : "stopped");
    else if (reply && err instanceof ChatError) {
      if (err.partial) reply.setContent(err.partial);
      if (err.code === "superseded") {
        reply.finish("superseded");
        state.stale = true; // show the turn that replaced it
      } else reply.fail("Reply failed.", err.message, null);
    }
  } finally {
    if (state.replaced === turn) state.replaced = null;
    if (state.turn === turn) {
      endTurn();
      if (!state.loading) setConnection("idle");
    }
  }
}

/**
 * Send a message and stream the reply into the transcript.
 * @param {string} text
 */
async function send(text) {
  if (state.turn && !state.following) return;
  if (state.turn) {
    // Following a reply started elsewhere: this message replaces it (the server supersedes
    // it), and the conversation is reloaded after, to show that reply as it was stored.
    state.replaced = state.turn;
    leaveTurn();
    state.following = false;
    state.stale = true;
  }
  state.loading?.abort();
  hideNotice();
  ui.welcome.hidden = true;
  const userItem = addUserMessage(text);
  const reply = addAssistantMessage();
  const turn = new AbortController();
  state.turn = turn;
  state.turnConversation = state.conversationId;
  setBusy(true);
  announce("Sent. The assistant is replying.");
  const retry = () => {
    if (state.turn && !state.following) return; // one turn at a time; the button stays for later
    userItem.remove();
    reply.item.remove();
    void send(text);
  };
  let connection = /** @type {ConnectionState} */ ("idle");
  try {
    const result = await streamTurn(
      { message: text, conversationId: state.conversationId, signal: turn.signal },
      {
        onConnected: ({ conversationId, messageId }) => {
          if (turn.signal.aborted) return;
          state.turnConversation = conversationId;
          state.conversationId = conversationId;
          setActiveConversation(conversationId);
          reply.setMessageId(messageId);
          touchConversation(conversationId, text);
          state.syncedAt = Date.now();
          renderList();
        },
        onChunk: (_chunk, content) => reply.setContent(content),
        onState: (name) => setConnection(name),
      },
    );
    reply.setContent(result.content);
    reply.finish("done");
    if (!turn.signal.aborted && result.conversationId === state.conversationId) {
      touchConversation(result.conversationId, text);
      state.syncedAt = Date.now();
      renderList();
    }
    announce("Reply finished.");
  } catch (err) {
    if (isAbort(err)) {
      reply.finish("stopped");
      announce("Reply stopped.");
    } else if (err instanceof ChatError) {
      connection = failTurn(err, text, userItem, reply, retry);
    } else {
      connection = "error";
      reply.fail("Reply failed.", `Something went wrong in the page: ${String(err)}`, retry);
    }
  } finally {
    if (state.turn === turn) {
      endTurn();
      if (!state.loading) setConnection(connection); // else a conversation is loading: say so
      if (!document.activeElement || document.activeElement === document.body) ui.input.focus();
    }
  }
}

/**
 * Show why a turn failed; returns the connection state to show afterwards.
 * @param {ChatError} err
 * @param {string} text
 * @param {HTMLLIElement} userItem
 * @param {ReturnType<typeof addAssistantMessage>} reply
 * @param {() => void} retry
 * @returns {ConnectionState}
 */
function failTurn(err, text, userItem, reply, retry) {
  if (err.partial) reply.setContent(err.partial);
  if (err.code === "superseded") {
    // A message sent from another tab replaced it; the conversation reloads when this ends.
    reply.finish("superseded");
    announce("The reply was replaced by a newer message.");
    state.stale = true;
    return "idle";
  }
  announce(`The reply failed: ${err.message}`);
  if (err.status === 404) {
    // The server no longer knows this conversation: offer to carry on in a new one.
    if (state.conversationId) removeConversation(state.conversationId);
    reply.fail("Not sent.", `${err.message} Retry to send it in a new conversation.`, () => {
      state.conversationId = null;
      setActiveConversation(null);
      renderList();
      retry();
    });
    return "idle";
  }
  if (err.status >= 400 && err.status < 500 && !err.retryable) {
    // Rejected before any reply (too long, invalid): give the text back to edit.
    userItem.dataset.state = "rejected";
    reply.fail("Not sent.", err.message, null);
    if (!ui.input.value) {
      ui.input.value = text;
      autosize();
    }
    return "idle";
  }
  reply.fail("Reply failed.", err.message, err.retryable ? retry : null);
  return err.code === "network_error" || err.code === "connection_lost" ? "error" : "idle";
}

// ---- composer ----------------------------------------------------------------------------

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!text || (state.turn && !state.following)) return;
  ui.input.value = "";
  autosize();
  void send(text);
});
ui.stop.addEventListener("click", () => {
  stopTurn();
  ui.input.focus();
});
ui.newChat.addEventListener("click", () => {
  newChat();
  closeSidebar(false);
  ui.input.focus();
});
for (const suggestion of document.querySelectorAll(".suggestion")) {
  suggestion.addEventListener("click", () => void send(suggestion.textContent ?? ""));
}
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (sidebarIsOpen()) closeSidebar(true);
  else if (state.turn) stopTurn();
});

// ---- start -------------------------------------------------------------------------------

renderList();
if (state.conversationId) void openConversation(state.conversationId);
else setConnection("idle");
document.documentElement.dataset.ready = "true";
