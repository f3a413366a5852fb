# Benchmark of issue 8: chatbot-sse against a raw ASGI floor and two SSE frameworks (bench/).
.PHONY: bench bench-quick bench-install

$(VENV)/.bench-installed: $(VENV)/.dev-installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench-install: $(VENV)/.bench-installed ## Install the benchmark's peers, psutil, py-spy and wrk
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; \
	  else echo "bench needs wrk: sudo apt-get install -y wrk"; exit 1; fi; }

# make bench's second run: how chatbot-sse runs by default, reported beside the judged one.
BENCH_UVLOOP_SERVERS = bare_asgi,sse_starlette_app,chatbot_sse,chatbot_sse_gunicorn

bench: bench-install ## Full benchmark (~30 min): issue 8's targets judged on asyncio + h11, then uvloop + httptools reported; fails when a target is missed
	@if $(MAKE) --no-print-directory native; then compiled=--compiled; \
	  else echo "no compiled build (make native failed: a C compiler?): its row is left out"; fi; \
	  $(PY) -m bench.run $$compiled; judged=$$?; \
	  $(PY) -m bench.run --stack uvloop --report-only --servers $(BENCH_UVLOOP_SERVERS) \
	    || { echo "bench: the uvloop run found something broken"; exit 2; }; \
	  exit $$judged

bench-quick: bench-install ## Seconds per scenario: proves the harness works; fails only when something is broken
	$(PY) -m bench.run --quick --out bench/results/quick.json

# The test suite runs the quick benchmark (tests/bench/), so it needs the same tools.
test test-coverage: bench-install
