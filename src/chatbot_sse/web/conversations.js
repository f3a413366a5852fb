/**
 * The conversation list, kept in the browser.
 *
 * - The list lives in `localStorage`, shared by every tab of the origin. A write never
 *   replaces the list wholesale: it re-reads what is stored, merges one record in (the newer
 *   `updatedAt` wins, a title once set is kept) and writes the result, so two tabs adding
 *   conversations at the same time both keep theirs. Removals are tombstones, so a merge
 *   cannot bring a removed conversation back unless it is used again later.
 * - Each tab owns its active conversation, kept in `sessionStorage`: it survives a reload of
 *   that tab and is not changed by what other tabs do.
 * - Other tabs' writes arrive as `storage` events; `onChange` reports them.
 * Messages are not kept here: the server's history endpoint is the truth.
 */

const LIST_KEY = "chatbot-sse:conversations:v1";
const ACTIVE_KEY = "chatbot-sse:active";
const MAX_ITEMS = 200;
const TOMBSTONE_MS = 30 * 24 * 3600 * 1000;

/**
 * @typedef {{id: string, title: string, updatedAt: number, deleted?: boolean}} ConversationRecord
 */

/** @returns {Record<string, ConversationRecord>} */
function readAll() {
  try {
    const parsed = JSON.parse(localStorage.getItem(LIST_KEY) ?? "{}");
    const items = parsed && typeof parsed.items === "object" ? parsed.items : {};
    /** @type {Record<string, ConversationRecord>} */
    const clean = {};
    for (const [id, rec] of Object.entries(items ?? {})) {
      if (rec && typeof rec.id === "string" && typeof rec.updatedAt === "number") {
        clean[id] = { id: rec.id, title: String(rec.title ?? ""), updatedAt: rec.updatedAt, deleted: !!rec.deleted };
      }
    }
    return clean;
  } catch {
    return {};
  }
}

/** @param {Record<string, ConversationRecord>} items */
function writeAll(items) {
  const now = Date.now();
  const kept = Object.values(items)
    .filter((r) => !r.deleted || now - r.updatedAt < TOMBSTONE_MS)
    .sort((a, b) => b.updatedAt - a.updatedAt)
    .slice(0, MAX_ITEMS);
  try {
    localStorage.setItem(LIST_KEY, JSON.stringify({ items: Object.fromEntries(kept.map((r) => [r.id, r])) }));
  } catch {
    // Storage full or disabled (private mode): the page still works, the list is not kept.
  }
}

/**
 * Merge one record into what is stored now.
 * @param {ConversationRecord} record
 */
function merge(record) {
  const items = readAll();
  const old = items[record.id];
  if (!old || record.updatedAt >= old.updatedAt) {
    items[record.id] = { ...record, title: old?.title || record.title };
  } else if (!old.title && record.title) {
    old.title = record.title;
  }
  writeAll(items);
}

/** Conversations, most recently used first, without removed ones. */
export function listConversations() {
  return Object.values(readAll())
    .filter((r) => !r.deleted)
    .sort((a, b) => b.updatedAt - a.updatedAt);
}

/**
 * Whether a conversation was removed from the list (deleted, or found gone from the server).
 * @param {string} id
 */
export function isRemoved(id) {
  return readAll()[id]?.deleted === true;
}

/** @param {string} id */
export function getConversation(id) {
  const rec = readAll()[id];
  return rec && !rec.deleted ? rec : null;
}

/**
 * Record that a conversation was used now (created, or a turn finished).
 * @param {string} id
 * @param {string} title used only when the conversation has none yet
 */
export function touchConversation(id, title) {
  merge({ id, title: titleFrom(title), updatedAt: Date.now(), deleted: false });
}

/** @param {string} id */
export function removeConversation(id) {
  merge({ id, title: "", updatedAt: Date.now(), deleted: true });
}

/** A one-line title from the first message. */
export function titleFrom(text) {
  const line = String(text).replace(/\s+/g, " ").trim();
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

/** This tab's active conversation id, or null for a new chat. */
export function activeConversation() {
  try {
    return sessionStorage.getItem(ACTIVE_KEY);
  } catch {
    return null;
  }
}

/** @param {string | null} id */
export function setActiveConversation(id) {
  try {
    if (id) sessionStorage.setItem(ACTIVE_KEY, id);
    else sessionStorage.removeItem(ACTIVE_KEY);
  } catch {
    // sessionStorage disabled: a reload starts a new chat, nothing else breaks.
  }
}

/**
 * Call `callback` when another tab changes the list.
 * @param {() => void} callback
 */
export function onChange(callback) {
  window.addEventListener("storage", (event) => {
    if (event.key === LIST_KEY || event.key === null) callback();
  });
}
