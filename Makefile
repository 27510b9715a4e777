# Two commands do everything on a fresh machine with Python 3.11+ and make:
#   make demo   run the bot's main job on the embedded default
#   make test   run every test suite CI runs
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit chaos chaos-loaded lint bench clean chromium promtool

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,train,plot,ray]'
	touch $(STAMP)

# The bot serves its dashboard while the demo's market plays (the URL printed first, with #token=). In a terminal,
# the same URL then stays served read-only from the journals (gatebot dashboard) until Ctrl-C; scripted (no
# terminal), make demo ends with the run and its exit status.
demo: $(STAMP)
	rm -rf state/demo
	@token=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))'); \
	echo "the demo's dashboard: http://127.0.0.1:8787/#token=$$token"; \
	GATEBOT_API_TOKEN=$$token $(BIN)/gatebot run examples/demo.toml; status=$$?; \
	if [ -t 0 ] && [ -t 1 ] && [ $$status -eq 0 ]; then \
		echo "the demo's market has ended; its dashboard stays at the same address, read-only (Ctrl-C ends it)"; \
		GATEBOT_API_TOKEN=$$token $(BIN)/gatebot dashboard state/demo --port 8787; \
	fi; exit $$status

# The browser test's Chromium is Debian's (playwright drives /usr/bin/chromium, never a browser of its own):
# installed here when absent and apt-get can (root); otherwise tests/browser/test_dashboard_page.py says it is missing.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	fi

# promtool checks the shipped alert rules (tests/unit/app/test_monitoring.py): Debian's prometheus package, installed
# here the same way when absent; otherwise that test says it is missing (the YAML-and-expression check still runs).
PROMTOOL := /usr/bin/promtool
promtool:
	@if [ ! -x $(PROMTOOL) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; \
	fi

# Two pytest workers, one per core, each taking whole test files (module fixtures stay in one process): the chaos
# files run beside the others, which their verdicts must not mind (make chaos-loaded shows they do not).
test: $(STAMP) chromium promtool
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests -n 2 --dist loadfile

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not chaos"

chaos: $(STAMP)
	$(BIN)/python -m pytest tests -m chaos

# The chaos suite and the fault soak with two busy processes beside them (not part of `make test`): their
# verdict must not depend on the machine's load. The busy processes are killed however pytest ends; -rP
# prints the passed tests' output (the drivers' and the soak's RESULT lines).
BUSY := $(BIN)/python -c 'while 1: pass'
chaos-loaded: $(STAMP)
	$(BUSY) & a=$$!; $(BUSY) & b=$$!; trap 'kill $$a $$b 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m pytest tests -m chaos -rP

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

SHARED_5M := ../shared/data/bingx_btcusdt_5m_2025-08-06_2025-10-14.csv

bench: $(STAMP)
	@if [ -f $(SHARED_5M) ]; then $(BIN)/python benchmarks/replay_sma.py $(SHARED_5M); \
	else echo "skipping the BingX file benchmark: $(SHARED_5M) is absent"; fi
	$(BIN)/python benchmarks/replay_scale.py
	@if [ -f $(SHARED_5M) ]; then $(BIN)/python benchmarks/replay_opportunity_gating.py $(SHARED_5M); fi
	$(BIN)/python benchmarks/decision_latency.py
	@if [ -f $(SHARED_5M) ]; then $(BIN)/python benchmarks/replay_recording.py $(SHARED_5M); fi
	@if [ -f $(SHARED_5M) ]; then $(BIN)/python benchmarks/sweep.py $(SHARED_5M); fi

clean:
	rm -rf $(VENV) state/*.sqlite* state/*.json
