/**
 * The page's furniture: element references, the connection badge, announcements for screen
 * readers, the notice bar, the theme toggle, the conversation drawer on narrow screens, the
 * delete dialog and the composer's busy state. No chat logic here; `app.js` decides when
 * each is used.
 */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
export const ui = {
  layout: $("layout"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  openSidebar: $("open-sidebar"),
  closeSidebar: $("close-sidebar"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  noConversations: $("no-conversations"),
  title: $("chat-title"),
  connection: $("connection"),
  connectionLabel: $("connection-label"),
  themeToggle: $("theme-toggle"),
  notice: $("notice"),
  noticeText: $("notice-text"),
  noticeAction: $("notice-action"),
  noticeClose: $("notice-close"),
  welcome: $("welcome"),
  composer: /** @type {HTMLFormElement} */ ($("composer")),
  input: /** @type {HTMLTextAreaElement} */ ($("message")),
  send: $("send"),
  stop: $("stop"),
  announcer: $("announcer"),
  earlier: /** @type {HTMLButtonElement} */ ($("earlier")),
  deleteDialog: /** @type {HTMLDialogElement} */ ($("delete-dialog")),
  deleteText: $("delete-text"),
};

// ---- connection indicator and announcements ----------------------------------------------

export const CONNECTION_LABELS = {
  idle: "Ready",
  loading: "Loading…",
  connecting: "Connecting…",
  streaming: "Receiving…",
  reconnecting: "Reconnecting…",
  error: "Disconnected",
  offline: "Offline",
};

/** @param {keyof typeof CONNECTION_LABELS} name */
export function setConnection(name) {
  const effective = !navigator.onLine && (name === "idle" || name === "error") ? "offline" : name;
  ui.connection.dataset.state = effective;
  ui.connectionLabel.textContent = CONNECTION_LABELS[effective];
}

/** Say something to screen-reader users without moving focus. */
export function announce(text) {
  ui.announcer.textContent = "";
  setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

/**
 * Show a page-level notice (e.g. history could not be loaded), with an optional action.
 * @param {string} text
 * @param {{label: string, run: () => void} | null} [action]
 */
export function showNotice(text, action = null) {
  ui.noticeText.textContent = text;
  ui.noticeAction.hidden = !action;
  ui.noticeAction.onclick = null;
  if (action) {
    ui.noticeAction.textContent = action.label;
    ui.noticeAction.onclick = () => {
      hideNotice();
      action.run();
    };
  }
  ui.notice.hidden = false;
}

export function hideNotice() {
  ui.notice.hidden = true;
}

// ---- theme -------------------------------------------------------------------------------

const dark = window.matchMedia("(prefers-color-scheme: dark)");

function currentTheme() {
  return document.documentElement.dataset.theme ?? (dark.matches ? "dark" : "light");
}

function syncThemeToggle() {
  const isDark = currentTheme() === "dark";
  ui.themeToggle.setAttribute("aria-pressed", String(isDark));
  ui.themeToggle.title = isDark ? "Switch to the light theme" : "Switch to the dark theme";
}

ui.themeToggle.addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem("chatbot-sse:theme", next);
  } catch {
    // not saved; the choice lasts for this page view
  }
  syncThemeToggle();
});
dark.addEventListener("change", syncThemeToggle);

// ---- sidebar (a drawer on narrow screens) ------------------------------------------------

const narrow = window.matchMedia("(max-width: 799px)");

export function openSidebar() {
  ui.layout.classList.add("sidebar-open");
  ui.scrim.hidden = false;
  ui.openSidebar.setAttribute("aria-expanded", "true");
  ui.newChat.focus();
}

/** @param {boolean} restoreFocus */
export function closeSidebar(restoreFocus) {
  if (!ui.layout.classList.contains("sidebar-open")) return;
  ui.layout.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
  ui.openSidebar.setAttribute("aria-expanded", "false");
  if (restoreFocus) ui.openSidebar.focus();
}

ui.openSidebar.addEventListener("click", openSidebar);
ui.closeSidebar.addEventListener("click", () => closeSidebar(true));
ui.scrim.addEventListener("click", () => closeSidebar(true));
narrow.addEventListener("change", () => closeSidebar(false));

/** True when the drawer is open (on a narrow screen). */
export function sidebarIsOpen() {
  return ui.layout.classList.contains("sidebar-open");
}

// ---- the delete dialog -------------------------------------------------------------------

/**
 * Ask before deleting a conversation on the server; resolves true to go ahead.
 * @param {string} title
 * @returns {Promise<boolean>}
 */
export function confirmDelete(title) {
  const dialog = ui.deleteDialog;
  ui.deleteText.textContent =
    `“${title}” and all its messages will be deleted from the server, for good. ` +
    "Other tabs and devices that have it open lose it too.";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    /** @type {HTMLButtonElement} */ (dialog.querySelector("[data-close-dialog]")).focus();
  });
}

// ---- composer ----------------------------------------------------------------------------

/**
 * @param {boolean} busy a reply is coming: Stop shows
 * @param {boolean} [canSend] and a message may still be sent (it would replace the reply)
 */
export function setBusy(busy, canSend = false) {
  ui.composer.dataset.busy = String(busy);
  ui.send.hidden = busy && !canSend;
  ui.stop.hidden = !busy;
}

/** Grow the message box with its text, up to a limit. */
export function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

ui.input.addEventListener("input", autosize);
ui.noticeClose.addEventListener("click", hideNotice);
window.addEventListener("online", () => setConnection("idle"));
window.addEventListener("offline", () => setConnection("offline"));
syncThemeToggle();
setBusy(false);
