# Two commands for a newcomer: `make hub` (start the hub on the embedded default) and `make test`.
VENV      := $(CURDIR)/.venv
PY        := $(VENV)/bin/python
NODE_BIN  := $(VENV)/node/node_modules/.bin
CHP       := $(NODE_BIN)/configurable-http-proxy
CONFIG    ?= deploy/hub.yaml
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(VENV)/bin:$(NODE_BIN):$(PATH)

.PHONY: hub test venv proxy system-packages docs check bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

venv: $(VENV)/.installed

$(CHP):
	npm install --silent --no-fund --no-audit --prefix $(VENV)/node configurable-http-proxy@5.3.0

proxy: $(CHP)

# what the tests drive for real: Debian's chromium (browser tests) and PostgreSQL server (production tests);
# SLURM's packages are installed by deploy/slurm/dev-cluster itself
system-packages:
	@{ command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	  --no-install-recommends chromium postgresql sudo openssl; }

hub: venv proxy
	@echo "HPCLab hub: http://127.0.0.1:8000  — log in as 'admin'."
	@echo "  Password: \$$HPCLAB_ADMIN_PASSWORD if set, else generated and printed once below on the first start."
	@echo "  Forgot it? .venv/bin/hpclab-hub users add admin   (resets it)"
	$(VENV)/bin/hpclab-hub run --config $(CONFIG)

check: venv
	$(VENV)/bin/hpclab-hub check $(CONFIG)

docs: venv
	$(VENV)/bin/hpclab-hub schema --markdown > docs/admin-reference.md

test: venv proxy system-packages
	$(PY) -m pytest

bench: venv proxy
	$(PY) benchmarks/spawn_ready.py

clean:
	rm -rf $(VENV) .hpclab test-artifacts benchmarks/results
