/**
 * The conversation list in the sidebar, drawn from the browser's stored list: one button per
 * conversation (the current one marked `aria-current`) and one to delete it.
 */

import { getConversation, listConversations } from "./conversations.js";
import { ui } from "./ui.js";

/**
 * Draw the list, marking `activeId` as current, and the page's title.
 * @param {string | null} activeId
 * @param {{open: (id: string) => void, remove: (id: string) => void}} actions
 */
export function renderList(activeId, actions) {
  const items = listConversations();
  ui.noConversations.hidden = items.length > 0;
  ui.list.replaceChildren(
    ...items.map((rec) => {
      const li = document.createElement("li");
      li.className = "conversation";
      const open = document.createElement("button");
      open.type = "button";
      open.className = "conversation-open";
      open.dataset.id = rec.id;
      if (rec.id === activeId) open.setAttribute("aria-current", "page");
      const title = document.createElement("span");
      title.className = "conversation-title";
      title.textContent = rec.title || "Untitled conversation";
      const when = document.createElement("time");
      when.className = "conversation-time";
      when.dateTime = new Date(rec.updatedAt).toISOString();
      when.textContent = relativeTime(rec.updatedAt);
      open.append(title, when);
      open.addEventListener("click", () => actions.open(rec.id));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "icon-button conversation-remove";
      remove.setAttribute("aria-label", `Delete “${title.textContent}”`);
      remove.title = "Delete";
      remove.textContent = "×";
      remove.addEventListener("click", () => actions.remove(rec.id));
      li.append(open, remove);
      return li;
    }),
  );
  const current = activeId ? getConversation(activeId) : null;
  const title = current?.title || (activeId ? "Conversation" : "New chat");
  ui.title.textContent = title;
  document.title = activeId ? `${title} · chatbot-sse` : "chatbot-sse";
}

/** @param {number} ms */
function relativeTime(ms) {
  const seconds = Math.round((Date.now() - ms) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

