# The web page: the browser its tests drive, its screenshots, a syntax check of its scripts.
# Included by the main Makefile, which defines VENV, PY and dev-install.

CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: browser screenshots web-check

browser: ## Install Debian's Chromium for the browser tests, if missing (browsers can't be downloaded)
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $(CHROMIUM)"; \
	else $(APT) install -y chromium || { $(APT) update && $(APT) install -y chromium; }; fi

screenshots: dev-install browser ## Save the page in light, dark and phone sizes to test-artifacts/
	$(PY) -m pytest tests/e2e/test_web_page.py -q -k "theme or phone"
	@ls -1 test-artifacts/web-*.png

web-check: ## Syntax-check the page's scripts (needs node; skipped without it)
	@if command -v node >/dev/null; then \
	  for f in src/chatbot_sse/web/*.js; do node --experimental-default-type=module --check "$$f" || exit 1; done; \
	  echo "web scripts: syntax ok"; \
	else echo "node not installed: web-check skipped"; fi
