/**
 * The API key, for servers started with `API_KEYS`: the page has no account system, so when
 * a request is refused with 401 it asks the person for a key in a dialog of its own (never
 * `prompt()`), keeps it for this tab (sessionStorage) or, if asked to, for this browser
 * (localStorage), and sends it as `Authorization: Bearer <key>` on every request.
 *
 * Keys go only in that header, never in a URL (access logs keep URLs). A key the server
 * rejects is forgotten at once, and the dialog says so.
 */

const STORAGE_KEY = "chatbot-sse:api-key";

/** @returns {string | null} the key this tab sends, if any */
export function currentKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage is off (privacy mode): a key lives only as long as `memoryKey`
  }
}

/** A key kept in memory when storage refuses it, so the page still works until a reload. */
let memoryKey = /** @type {string | null} */ (null);

/**
 * @param {string} key
 * @param {boolean} remember keep it in this browser (localStorage), not just this tab
 */
function storeKey(key, remember) {
  forgetKey();
  memoryKey = key;
  try {
    (remember ? localStorage : sessionStorage).setItem(STORAGE_KEY, key);
  } catch {
    // storage is off: memoryKey serves this page
  }
}

export function forgetKey() {
  memoryKey = null;
  try {
    sessionStorage.removeItem(STORAGE_KEY);
    localStorage.removeItem(STORAGE_KEY);
  } catch {
    // nothing stored
  }
}

/**
 * `init` with the key's Authorization header added (when there is a key).
 * @param {RequestInit} init
 * @returns {RequestInit}
 */
function withKey(init) {
  const key = currentKey() ?? memoryKey;
  if (!key) return init;
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${key}`);
  return { ...init, headers };
}

/** @type {Promise<boolean> | null} one dialog for every request refused meanwhile */
let asking = null;

/**
 * `fetch` with the key. A 401 asks for a key and sends the request again with it (the
 * server refused it before doing anything, so this is safe for a POST too); when the
 * person cancels, the 401 response is returned for the caller to report.
 * @param {string} url
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
export async function authFetch(url, init = {}) {
  for (;;) {
    const sent = withKey(init);
    const response = await fetch(url, sent);
    if (response.status !== 401 || init.keepalive) return response;
    const rejected = new Headers(sent.headers).has("Authorization");
    if (rejected) forgetKey();
    asking ??= askForKey(rejected).finally(() => {
      asking = null;
    });
    if (!(await asking)) return response;
    if (init.signal?.aborted) throw new DOMException("The request was stopped.", "AbortError");
  }
}

/**
 * Show the key dialog; resolves true once a key was entered, false when dismissed.
 * @param {boolean} rejected the key sent was refused (else none was sent)
 * @returns {Promise<boolean>}
 */
function askForKey(rejected) {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById("key-dialog"));
  const form = /** @type {HTMLFormElement} */ (document.getElementById("key-form"));
  const input = /** @type {HTMLInputElement} */ (document.getElementById("key-input"));
  const remember = /** @type {HTMLInputElement} */ (document.getElementById("key-remember"));
  const reason = /** @type {HTMLElement} */ (document.getElementById("key-reason"));
  reason.textContent = rejected
    ? "That key was not accepted. Check it and enter it again."
    : "This server needs an API key. Ask its operator for one.";
  input.value = "";
  return new Promise((resolve) => {
    const onSubmit = (/** @type {SubmitEvent} */ event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return input.focus();
      storeKey(key, remember.checked);
      dialog.close("entered");
    };
    const onClose = () => {
      form.removeEventListener("submit", onSubmit);
      resolve(dialog.returnValue === "entered");
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

for (const button of document.querySelectorAll("[data-close-dialog]")) {
  button.addEventListener("click", () => /** @type {HTMLDialogElement} */ (button.closest("dialog")).close());
}
