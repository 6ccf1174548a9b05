# Two commands on a fresh machine:
#   make run    set up, create demo runs on the local store, open JupyterLab with the extension
#   make test   set up (incl. headless Chromium where possible) and run lint + the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS ?= dev,torch,mlx,optuna,data,nvidia,llm,privacy,lightning,transformers,keras,sklearn,xgboost,lightgbm,media,mlflow,serve,features
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup run demo lab test test-compat lint lint-ts bench browser postgres redis azurite airflow prefect bentoml feast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 first: on CPU-only machines this resolves to the CPU build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(PY) examples/demo.py

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

run: demo lab

# Headless Chromium for the browser tests (Debian/Ubuntu package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found: browser tests will be skipped (install the chromium package)"; fi; }

# PostgreSQL server binaries for the team-store tests (Debian/Ubuntu package; needs root).
# The tests start their own server in a temporary folder; they never skip without one.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	  else echo "PostgreSQL not found: install the postgresql package (the team-store tests need it)"; exit 1; fi; }

# redis-server for the feature store's Redis online-store tests (Debian/Ubuntu package; needs
# root). The tests start their own server on 127.0.0.1.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	  else echo "redis-server not found: the Redis online-store tests will be skipped (install the redis-server package)"; fi; }

# Azurite (Microsoft's local Azure Storage server, npm package) for the Azure artifact tests,
# installed into .tools/azurite; the tests start their own server on 127.0.0.1.
AZURITE_VERSION ?= 3.37.0
azurite:
	@test -x .tools/azurite/node_modules/.bin/azurite-blob || { \
	  command -v npm >/dev/null 2>&1 || { echo "npm not found: install nodejs and npm (the Azure artifact tests need Azurite)"; exit 1; }; \
	  npm install --prefix .tools/azurite --no-audit --no-fund --silent azurite@$(AZURITE_VERSION); }

# Real Airflow 3 and Prefect 3 for the exported-DAG/flow tests, each in its own venv (both pin
# SQLAlchemy, pydantic and more): installed from the pinned .ci/*-requirements.txt without
# resolving, and rebuilt only when that file changes. mlops_jupyter is this checkout (a .pth).
SCHED_PYTHON ?= $(shell command -v python3.11 || echo $(PYTHON))

define sched_venv
	@$(SCHED_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "$<: pins wheels for Python 3.11; set SCHED_PYTHON=python3.11"; exit 1; }
	rm -rf $(@D)
	$(SCHED_PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install -q --no-deps -r $<
	echo "$(CURDIR)" > "$$($(@D)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mlops_jupyter_checkout.pth"
	$(@D)/bin/python -m pip check
	touch $@
endef

airflow: .venv-airflow/.installed
prefect: .venv-prefect/.installed

.venv-airflow/.installed: .ci/airflow-requirements.txt
	$(sched_venv)

.venv-prefect/.installed: .ci/prefect-requirements.txt
	$(sched_venv)

# BentoML 1.4 for the `models package --target bentoml` tests (bentoml build / serve of a
# packaged model), in its own venv the same way: it pins its own starlette, uvicorn, pydantic.
bentoml: .venv-bentoml/.installed

.venv-bentoml/.installed: .ci/bentoml-requirements.txt
	$(sched_venv)

# Feast 0.67 for the `features export --to-feast` tests (feast apply and
# get_historical_features on the exported repository), in its own venv the same way: it pins
# its own pandas, dask and SQLAlchemy.
feast: .venv-feast/.installed

.venv-feast/.installed: .ci/feast-requirements.txt
	$(sched_venv)

lint: setup
	$(VENV)/bin/ruff check mlops_jupyter tests benchmarks examples

# eslint (typescript-eslint, no `any`) over the lab extension; node_modules come from the
# committed yarn.lock (setup's build installs them; installed here only when missing)
lint-ts: setup
	cd labextension && { test -x node_modules/.bin/eslint || PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jlpm install --immutable; } && node_modules/.bin/eslint src

# The feature suites that touch the store run a second time on PostgreSQL (a real server
# the tests start), besides the contract suite that runs on both backends every time.
PG_SUITES ?= $(shell cat .ci/postgres-suites.txt)

test: setup browser postgres redis azurite airflow prefect bentoml feast lint lint-ts
	$(PY) -m pytest -p no:cacheprovider -ra --durations=25
	MLOPS_TEST_BACKEND=postgresql $(PY) -m pytest -p no:cacheprovider -q -ra --durations=25 -m "not browser and not sqlite_only" $(PG_SUITES)

# The suite on the oldest (3.10 + pandas 2.3 + numpy 2.2 + the lowest polars allowed) and the
# newest supported Python, each in its own venv without the heavy extras (torch, mlx, optuna,
# nvidia: their tests skip). Browser tests run only in `make test` (-m "not browser").
# PY310/PY313 name the interpreters (.ci/run finds them under pyenv).
PY310 ?= python3.10
PY313 ?= python3.13
COMPAT_VENVS := .venv-py310 .venv-py313
# The exported DAG/flow tests and the Feast export test run Airflow, Prefect and Feast from
# their own Python 3.11 venvs: the main suite covers them, and the compatibility venvs would
# only run the same thing again.
# The domain suites over the tracking server and the Jupyter server (remote_*, server_*), the
# server fuzz test and the benchmark smoke tests drive the same code as the main suite
# through HTTP and mostly wait on server processes; the compatibility venvs run the core of
# each (test_trackserver, test_remote_client, test_server_api) and test_modules_import,
# which imports every module on that Python, and leave the rest to the main suite.
COMPAT_KEEP := tests/test_remote_client.py tests/test_server_api.py
COMPAT_HEAVY := $(filter-out $(COMPAT_KEEP),$(wildcard tests/test_remote_*.py tests/test_server_*.py \
	tests/test_bench_*.py)) tests/test_trackserver_fuzz.py tests/test_trackserver_mlflow.py \
	tests/test_sidebar_remote.py tests/test_loop_e2e.py
COMPAT_SKIP := --ignore=tests/test_export_airflow.py --ignore=tests/test_export_prefect.py \
	--ignore=tests/test_features_feast.py $(addprefix --ignore=,$(sort $(COMPAT_HEAVY)))

.venv-py%/.installed: pyproject.toml .ci/constraints-py%.txt
	$(PY$*) -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install -q --upgrade pip
	# the built JupyterLab extension in mlops_jupyter/labextension is reused (no node build)
	.venv-py$*/bin/python -m pip install -q -c .ci/constraints-py$*.txt -e ".[dev]"
	touch $@

# The two venvs run at the same time (their tests mostly wait on servers and kernels; each
# session starts its own servers on free ports); their outputs are printed one after the other.
# Tests that failed are run once more, alone (pytest --lf, one venv at a time): a test that
# passes then failed only because both suites shared the 2 CPUs; it is named in the output,
# and a test that fails again fails the target.
COMPAT_PYTEST = -m pytest -q -ra --durations=15 -m "not browser" $(COMPAT_SKIP)
test-compat: postgres $(addsuffix /.installed,$(COMPAT_VENVS))
	@for v in $(COMPAT_VENVS); do \
	  ( $$v/bin/python $(COMPAT_PYTEST) -o cache_dir=$$v/.pytest_cache \
	      > $$v/pytest.log 2>&1; echo $$? > $$v/pytest.rc ) & \
	done; wait; \
	failed=""; for v in $(COMPAT_VENVS); do \
	  echo "== $$v: $$($$v/bin/python -c 'import sys, numpy, pandas, polars; print(sys.version.split()[0], "numpy", numpy.__version__, "pandas", pandas.__version__, "polars", polars.__version__)')"; \
	  cat $$v/pytest.log; [ "$$(cat $$v/pytest.rc)" = 0 ] || failed="$$failed $$v"; \
	done; \
	still=""; for v in $$failed; do \
	  echo "== $$v: failed with both suites running:"; grep -E '^(FAILED|ERROR) ' $$v/pytest.log; \
	  echo "== $$v: those tests again, alone:"; \
	  $$v/bin/python $(COMPAT_PYTEST) -o cache_dir=$$v/.pytest_cache --lf || still="$$still $$v"; \
	done; \
	if [ -n "$$still" ]; then echo "test-compat failed in:$$still"; exit 1; fi

bench: setup
	$(PY) benchmarks/bench_logging.py

clean:
	rm -rf $(VENV) $(COMPAT_VENVS) .venv-airflow .venv-prefect .venv-bentoml .venv-feast build dist test-artifacts .pytest_cache
