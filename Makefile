# Home-lab inference tier: one place for set-up, the demo and the tests.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
LITELLM_VENV := .venv-litellm
PY := $(CURDIR)/$(VENV)/bin/python
LAB_DIR ?= $(CURDIR)/.lab
# the Kubernetes control plane built from Go modules (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd), cached by version outside the work tree; its kubectl comes first on PATH
CONTROLPLANE_BIN := $(shell $(PYTHON) -m lab.controlplane.build --print-dir 2>/dev/null)

export PATH := $(CONTROLPLANE_BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export LAB_DIR
export ANSIBLE_FORCE_COLOR ?= 0
# pip on this machine warns about find-links folders that do not exist; keep the output readable
PIP_FILTER := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# pytest workers: each runs its share of the test files with twins of its own (most of a twin's time is waiting)
PYTEST_WORKERS ?= 3
# the machine busy while molecule runs: stress-ng keeps both cores this busy (percent), as an operator's lab is
LOAD_PERCENT ?= 60
# make chaos: rounds and seed of the long sweep of runs stopped at random instants
CHAOS_ROUNDS ?= 20
CHAOS_SEED ?=

.PHONY: help venv controlplane demo test lint pytest molecule chaos lab-up lab-down lab-status lab-reset clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

venv: $(VENV)/.installed $(VENV)/.collection $(LITELLM_VENV)/.installed ## create the virtualenvs (controller + tests, LiteLLM)

$(VENV)/.installed: requirements/controller.txt requirements/lab.txt requirements/test.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip==26.3 $(PIP_FILTER)
	$(VENV)/bin/pip install -q -r requirements/test.txt -c requirements/constraints.txt $(PIP_FILTER)
	touch $@

# the work tree is the collection homelab.inference (galaxy.yml): linked into the virtualenv's ansible_collections,
# as an editable install, so Ansible and the tests find it by FQCN while it is edited here
$(VENV)/.collection: $(VENV)/.installed
	collections=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections/homelab; \
	mkdir -p $$collections && ln -sfn $(CURDIR) $$collections/inference
	touch $@

$(LITELLM_VENV)/.installed: requirements/litellm.txt
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q --upgrade pip==26.3 $(PIP_FILTER)
	$(LITELLM_VENV)/bin/pip install -q -r requirements/litellm.txt $(PIP_FILTER)
	touch $@

controlplane: ## build the twin's Kubernetes control plane from Go modules (once; cached by version)
	@$(PYTHON) -m lab.controlplane.build >/dev/null

lab-up: venv controlplane ## start the homelab twin on its own loopback address
	$(PY) -m lab up
lab-down: ## stop the twin
	$(PY) -m lab down
lab-status: ## show the twin's state
	$(PY) -m lab status
lab-reset: venv controlplane ## forget the twin's state and start it again
	$(PY) -m lab reset

demo: ## rebuild the tier on the twin, upgrade Ollama to qwen2.5:14b, print the report, stop the twin
	@$(MAKE) --no-print-directory -j2 venv controlplane
	@trap '$(PY) -m lab down >/dev/null' EXIT; \
	$(PY) -m lab reset; \
	kubectl --kubeconfig $(LAB_DIR)/kubeconfig apply -f lab/fixtures/paperless-ai.yaml; \
	ansible-playbook -i inventory/lab playbooks/rebuild-inference-tier.yml; \
	ansible-playbook -i inventory/lab playbooks/upgrade-model.yml -e tier=ollama -e model=qwen2.5:14b; \
	report=$$(ls -dt $(LAB_DIR)/reports/*-upgrade-ollama-* | head -1); \
	echo; echo "Report: $$report/report.md (and report.json)"

lint: venv ## ruff, yamllint, ansible-lint, the changelog fragments
	ruff check .
	ruff format --check .
	yamllint -s .
	ansible-lint
	antsibull-changelog lint

pytest: venv controlplane ## the pytest suite, on $(PYTEST_WORKERS) workers (slowest tests listed at the end)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

molecule: venv controlplane ## the molecule scenarios against the twin, with both cores kept busy (stress-ng)
	@command -v stress-ng >/dev/null || { echo "stress-ng is not installed (apt-get install stress-ng)" >&2; exit 1; }
	stress-ng --cpu 2 --cpu-load $(LOAD_PERCENT) --timeout 3h --quiet & load=$$!; \
	trap 'kill $$load 2>/dev/null; wait $$load 2>/dev/null' EXIT; \
	molecule test --all
	@echo "molecule: $$(ls molecule/*/molecule.yml | wc -l) passed, 0 failed"   # reached only when every scenario passed

chaos: venv controlplane ## the long sweep: upgrades stopped at CHAOS_ROUNDS seeded random instants, each recovered
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) CHAOS_SEED=$(CHAOS_SEED) $(PY) -m pytest -m chaos tests/matrix/test_chaos.py -v -s

test: ## everything CI runs: lint, pytest, molecule
	@$(MAKE) --no-print-directory -j2 venv controlplane
	@$(MAKE) --no-print-directory lint pytest molecule

clean: ## stop the twin and remove runtime files (keeps the virtualenvs and the control plane build)
	-$(PY) -m lab down
	rm -rf $(LAB_DIR) reports/*/ .pytest_cache .ruff_cache
