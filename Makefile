# Set-up and entry points. `make run` and `make test` create .venv with
# Python 3.10 when it is missing and install requirements.lock only when the
# lock changed since the last install.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lock-installed

.PHONY: run test test-all venv clean

run: $(STAMP)
	$(VENV)/bin/recguard run

test: $(STAMP)
	$(PY) -m pytest -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest tests

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@PYTHON="$(PYTHON)" sh scripts/make_venv.sh $(VENV)
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

clean:
	rm -rf $(VENV) runs
