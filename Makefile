PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Test processes (pytest-xdist workers): the tests mostly wait on the servers they start (gunicorn, redis-server,
# PostgreSQL, Chromium), so three share two cores well (four finished sooner, with more tests failing under the
# load). TEST_WORKERS=0 runs the tests in pytest's own process.
TEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

.PHONY: run test test-fast bench bench-quick soak lint clean client-js

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	PORT=$(PORT) $(VENV)/bin/gunicorn app:app

# Tests marked alone run after the others, by themselves: what they weigh (a worker's memory) depends on the load.
test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not alone"; parallel=$$?; $(PY) -m pytest -m alone; alone=$$?; \
	exit $$(( parallel || alone ))

test-fast: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m bench

bench-quick: $(VENV)/.installed
	$(PY) -m bench --quick

soak: $(VENV)/.installed
	CHAT_SOAK=long $(PY) -m pytest tests/test_soak.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The page loads the JavaScript client's module from the chat's static folder: one source, copied.
client-js:
	cp clients/js/chat-client.js chat/web/static/chat-client.js
