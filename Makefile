# rlhf-studio: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on this machine's disk; elsewhere set TORCH_SPEC=torch (or your CUDA build).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test test-fast lint format demo loop chromium clean pygments-css screenshots

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev,deepspeed]' '$(TORCH_SPEC)'
	touch $@

# Browser tests drive Debian's Chromium; install it when we can (root with apt-get).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: /usr/bin/chromium missing: browser tests will be skipped (apt-get install chromium)"; fi; \
	fi

# The whole suite. Exit code 5 (no test selected by PYTEST_ARGS) is not a failure.
test: venv chromium
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: venv
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py demo_setup
	DEBUG=1 $(BIN)/python manage.py runserver 127.0.0.1:8000

# Commands refuse to run without SECRET_KEY when DEBUG is off; `make loop` uses a random key
# made once for this checkout (var/.secret_key) unless SECRET_KEY is set.
var/.secret_key:
	mkdir -p var && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

loop: venv var/.secret_key
	SECRET_KEY="$${SECRET_KEY:-$$(cat var/.secret_key)}" $(BIN)/python manage.py migrate --noinput -v 0
	SECRET_KEY="$${SECRET_KEY:-$$(cat var/.secret_key)}" $(BIN)/python manage.py loop --out var/loop --overwrite

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache

# The stylesheet for highlighted code in model output (checked by tests/annotation/test_markdown.py).
pygments-css: venv
	DEBUG=1 $(BIN)/python -c "from annotation.markdown import pygments_css; open('annotation/static/css/pygments.css', 'w').write(pygments_css())"

# Screenshots of the ranking, pairwise and chat pages at 1366 px and 390 px into docs/screenshots/
# (a live server on the test database, Playwright with /usr/bin/chromium).
screenshots: venv chromium
	SCREENSHOT_DIR=docs/screenshots $(BIN)/pytest -q -p no:cacheprovider tests/browser/test_screenshots.py
