/**
 * The transcript: message bubbles in the `role="log"` list.
 *
 * User text is shown as plain text (`textContent`); assistant text goes through the safe
 * Markdown renderer. A streaming reply is marked `aria-busy="true"` so screen readers wait
 * for the finished reply instead of reading every chunk, and carries `data-state`
 * (`streaming`, `done`, `stopped`, `error`), which the styles and the tests read.
 */

import { renderInto } from "./markdown.js";

const list = /** @type {HTMLOListElement} */ (document.getElementById("messages"));
const scroller = /** @type {HTMLElement} */ (document.getElementById("transcript"));

/** Where `place` puts a message: before this item while older ones are shown, else the end. */
let placeBefore = /** @type {Element | null} */ (null);

/**
 * Put a message in the list: at the end (and scroll to it), or above the first one while
 * `prependMessages` runs.
 * @param {HTMLLIElement} item
 */
function place(item) {
  list.insertBefore(item, placeBefore);
  if (!placeBefore) scrollToEnd(true);
}

/**
 * Show older messages above the first one: `add` adds them, oldest first, as usual. What
 * was in view stays where it was.
 * @param {() => void} add
 */
export function prependMessages(add) {
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  placeBefore = list.firstElementChild;
  try {
    add();
  } finally {
    placeBefore = null;
  }
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
}

/** Remove every message. */
export function clearMessages() {
  list.replaceChildren();
}

/** True when the transcript has no messages. */
export function isEmpty() {
  return list.childElementCount === 0;
}

/** How many messages the transcript shows. */
export function messageCount() {
  return list.childElementCount;
}

/**
 * Append a user message.
 * @param {string} text
 * @returns {HTMLLIElement}
 */
export function addUserMessage(text) {
  const item = shell("user", "You");
  const body = item.querySelector(".message-body");
  body.textContent = text;
  place(item);
  return item;
}

/**
 * Append an assistant message and return a handle to fill it in.
 * @param {{content?: string, state?: string, messageId?: string}} [initial]
 */
export function addAssistantMessage(initial = {}) {
  const item = shell("assistant", "Assistant");
  const body = /** @type {HTMLElement} */ (item.querySelector(".message-body"));
  const meta = /** @type {HTMLElement} */ (item.querySelector(".message-meta"));
  let content = initial.content ?? "";
  let frame = 0;
  if (initial.messageId) item.dataset.messageId = initial.messageId;

  const render = () => {
    frame = 0;
    const stick = nearEnd();
    renderInto(body, content);
    if (content === "" && item.dataset.state === "streaming") body.appendChild(typingDots());
    if (stick) scrollToEnd(true);
  };

  const copyButton = button("Copy", "copy", "Copy this reply");
  copyButton.addEventListener("click", () => copy(content, copyButton));
  meta.append(copyButton);

  const handle = {
    item,
    /** Show the reply so far; rendering is batched to one per animation frame. */
    setContent(text) {
      content = text;
      if (!frame) frame = requestAnimationFrame(render);
    },
    /** @param {string} messageId */
    setMessageId(messageId) {
      item.dataset.messageId = messageId;
    },
    /**
     * Mark the reply finished: `done`, `stopped` (by the user), `superseded` (by a newer
     * message) or `interrupted`/`failed` (as stored by the server).
     * @param {string} state
     */
    finish(state) {
      if (frame) cancelAnimationFrame(frame);
      item.dataset.state = state;
      item.removeAttribute("aria-busy");
      render();
      const note = {
        stopped: "Stopped",
        superseded: "Replaced by a newer message",
        interrupted: "Interrupted",
        failed: "Failed",
      }[state] ??
        (state === "done" || state === "error" ? "" : state.charAt(0).toUpperCase() + state.slice(1));
      if (note) meta.prepend(tag(note));
    },
    /**
     * Show an error in the bubble, with a retry button when `onRetry` is given.
     * @param {string} lead what happened, in two words ("Reply failed.")
     * @param {string} message readable text, usually the server's
     * @param {(() => void) | null} onRetry
     */
    fail(lead, message, onRetry) {
      handle.finish("error");
      const box = document.createElement("div");
      box.className = "message-error";
      box.setAttribute("role", "alert");
      const text = document.createElement("p");
      const strong = document.createElement("strong");
      strong.textContent = lead;
      text.append(strong, " ", message);
      box.append(text);
      if (onRetry) {
        const retry = button("Retry", "retry", "Retry this message");
        retry.addEventListener("click", onRetry);
        box.append(retry);
      }
      item.insertBefore(box, meta);
      if (!content) body.remove();
      scrollToEnd(false);
      return box;
    },
  };

  if (initial.state && initial.state !== "streaming") {
    handle.finish(initial.state);
  } else {
    item.dataset.state = "streaming";
    item.setAttribute("aria-busy", "true");
    render();
  }
  place(item);
  return handle;
}

/**
 * A message list item with a visually hidden speaker name for screen readers.
 * @param {"user" | "assistant"} role
 * @param {string} speaker
 */
function shell(role, speaker) {
  const item = document.createElement("li");
  item.className = `message message-${role}`;
  item.dataset.role = role;
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = `${speaker}:`;
  const body = document.createElement("div");
  body.className = role === "assistant" ? "message-body markdown" : "message-body";
  const meta = document.createElement("div");
  meta.className = "message-meta";
  item.append(who, body, meta);
  return item;
}

/** @param {string} label @param {string} name @param {string} ariaLabel */
function button(label, name, ariaLabel) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = `chip ${name}`;
  el.textContent = label;
  el.setAttribute("aria-label", ariaLabel);
  return el;
}

/** @param {string} text */
function tag(text) {
  const el = document.createElement("span");
  el.className = "message-tag";
  el.textContent = text;
  return el;
}

function typingDots() {
  const dots = document.createElement("span");
  dots.className = "typing";
  dots.setAttribute("aria-label", "The assistant is writing");
  for (let i = 0; i < 3; i++) dots.appendChild(document.createElement("span"));
  return dots;
}

/**
 * Copy text to the clipboard, falling back to a selection copy where the Clipboard API is
 * unavailable (plain http on a LAN address is not a secure context).
 * @param {string} text
 * @param {HTMLButtonElement} feedback
 */
async function copy(text, feedback) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    ok = document.execCommand("copy");
    area.remove();
  }
  feedback.textContent = ok ? "Copied" : "Copy failed";
  feedback.dataset.copied = String(ok);
  setTimeout(() => {
    feedback.textContent = "Copy";
    delete feedback.dataset.copied;
  }, 1500);
}

function nearEnd() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

/** @param {boolean} force scroll even when the reader has scrolled up */
export function scrollToEnd(force) {
  if (force || nearEnd()) scroller.scrollTop = scroller.scrollHeight;
}
