/**
 * Applies the theme saved by the toggle before the first paint, so a page set to the
 * opposite of the system's theme does not flash. A classic (blocking) script, kept tiny;
 * without a saved choice the CSS follows `prefers-color-scheme`.
 */
(function applySavedTheme() {
  try {
    const theme = localStorage.getItem("chatbot-sse:theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch {
    // storage disabled: follow the system theme
  }
})();
