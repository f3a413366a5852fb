# Load tests and the terminal demo. Each target starts a server (fast simulated engine,
# throw-away SQLite store) when none listens on LOADTEST_URL, and stops it afterwards.
# Relies on VENV, PY, HOST, PORT and the `install` target of the main Makefile.
LOADTEST_URL ?= http://$(HOST):$(PORT)
LOADTEST_ARGS ?=
LOADTEST_RESULTS ?= bench/results
LOADTEST_RESPONSE_DELAY ?= 0.05
LOADTEST_TOKEN_DELAY ?= 0.01
WITH_SERVER = $(PY) -m chatbot_sse.loadtest.withserver --url $(LOADTEST_URL) \
  --response-delay $(LOADTEST_RESPONSE_DELAY) --token-delay $(LOADTEST_TOKEN_DELAY) --
LOADTEST = $(PY) -m chatbot_sse.loadtest $(LOADTEST_URL)

.PHONY: load-test load-test-full load-test-ramp demo

load-test: install ## Load-test smoke run: 20 streams, 5 concurrent, every reply checked
	$(WITH_SERVER) $(LOADTEST) --requests 20 --concurrency 5 $(LOADTEST_ARGS)

load-test-full: install ## Load test: 100 requests, 10 concurrent; JSON and plot in bench/results/
	@mkdir -p $(LOADTEST_RESULTS)
	$(WITH_SERVER) $(LOADTEST) --requests 100 --concurrency 10 \
	  --json $(LOADTEST_RESULTS)/load-test-full.json --plot $(LOADTEST_RESULTS)/load-test-full.png \
	  $(LOADTEST_ARGS)

load-test-ramp: install ## Load test: multi-turn users ramping to 50 over 10 s, 20 s in all
	@mkdir -p $(LOADTEST_RESULTS)
	$(WITH_SERVER) $(LOADTEST) --concurrency 50 --ramp-up 10 --duration 20 --multi-turn \
	  --turns 3 --json $(LOADTEST_RESULTS)/load-test-ramp.json \
	  --plot $(LOADTEST_RESULTS)/load-test-ramp.png $(LOADTEST_ARGS)

demo: LOADTEST_RESPONSE_DELAY = 0.4
demo: LOADTEST_TOKEN_DELAY = 0.05
demo: install ## Chat in the terminal (chatbot-sse chat), with a server if none is running
	$(WITH_SERVER) $(VENV)/bin/chatbot-sse chat $(LOADTEST_URL)
