# The compiled build: the reply's path compiled by mypyc (pyproject's `hooks.mypyc`), as a
# wheel in build/native/dist and unpacked in build/native/site, where `make bench` and
# `make test-native` put it first on PYTHONPATH. Built from a copy of the sources, so no
# compiled module is ever left in src/ to shadow an edit; rebuilt whenever a source changes.
.PHONY: native test-native

NATIVE := build/native
NATIVE_SOURCES := pyproject.toml $(shell find src -name '*.py' 2>/dev/null)

$(NATIVE)/.built: $(VENV)/.dev-installed $(NATIVE_SOURCES)
	rm -rf $(NATIVE) && mkdir -p $(NATIVE)/project && touch $(NATIVE)/.started
	cp -r pyproject.toml README.md src $(NATIVE)/project/
	find $(NATIVE)/project \( -name '__pycache__' -o -name '*.so' \) -prune -exec rm -rf {} +
	HATCH_BUILD_HOOK_ENABLE_MYPYC=1 $(PY) -m pip wheel -q --no-build-isolation --no-deps \
	  -w $(NATIVE)/dist $(NATIVE)/project
	$(PY) -m pip install -q --no-deps --target $(NATIVE)/site $(NATIVE)/dist/*.whl
	mv $(NATIVE)/.started $@  # stamped with the time of the copy: a source edited since is newer

native: $(NATIVE)/.built ## Build the compiled wheel (mypyc, ~2.5 min; needs gcc) into build/native

# The suite's parts that drive the server as users do, against the compiled build. Compiled
# code checks annotations at run time and differs from Python in places (tests/test_build.py
# and pyproject's `exclude` list those found): what differs must fail here, not in production.
NATIVE_TESTS ?= tests/api tests/contracts tests/robustness tests/hardening tests/shutdown \
  tests/openai tests/test_reply_hub.py

# On Python 3.12+ a compiled coroutine passes an exception thrown into it on with the
# deprecated three-argument `throw()` (mypyc/mypyc#1214): a DeprecationWarning, which
# production does not show and the suite's `filterwarnings = error` would turn into a failure.
MYPYC_THROW_WARNING := ignore:the (type, exc, tb) signature of throw() is deprecated:DeprecationWarning

test-native: native bench-install browser nginx ## Run the end-to-end tests against the compiled build
	PYTHONPATH=$(CURDIR)/$(NATIVE)/site CHATBOT_SSE_EXPECT_COMPILED=1 $(PY) -m pytest -p no:cacheprovider \
	  -W "$(MYPYC_THROW_WARNING)" tests/test_build.py $(NATIVE_TESTS)
