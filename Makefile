# One entry point for people and CI. `demo` and `test` create the virtual environment when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# No test or demo reaches the network: Hugging Face is told to stay offline.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg
# Tiny models on a small shared CPU run fastest single-threaded (override by setting it yourself).
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test test-browser test-slurm lint format clean hooks

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[lab,test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m petl_kit demo

test: $(STAMP)
	PETL_KIT_OUTPUTS=$$(mktemp -d) $(PY) -m pytest -q --nbval-lax --nbval-current-env tests notebooks

# JupyterLab driven by headless Chromium (Debian's chromium and chromium-driver): skipped without
# them; CI sets CI_REQUIRE_BROWSER=1 so that they fail instead. `make test` runs them too.
test-browser: $(STAMP)
	PETL_KIT_OUTPUTS=$$(mktemp -d) $(PY) -m pytest -q -rs tests/browser

# Sweeps through a real single-node Slurm cluster (.ci/slurm_up.sh starts it from the installed
# Debian packages slurm-wlm munge slurmdbd mariadb-server; root, no systemd). Without sbatch the
# cluster tests are skipped; CI sets CI_REQUIRE_SLURM=1 so that they fail instead.
test-slurm: $(STAMP)
	PETL_KIT_OUTPUTS=$$(mktemp -d) $(PY) -m pytest -q -rs tests/experiments/test_slurm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check petl_kit tests benchmarks notebooks
	$(VENV)/bin/ruff format --check petl_kit tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format petl_kit tests benchmarks
	$(VENV)/bin/ruff check --fix petl_kit tests benchmarks

# git hooks from .pre-commit-config.yaml: notebooks stripped of outputs (cell tags kept), ruff
hooks: $(STAMP)
	$(VENV)/bin/pre-commit install

clean:
	rm -rf $(VENV) .pytest_cache
