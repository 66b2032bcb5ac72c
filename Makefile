# The two commands of the README: `make demo` (main job) and `make test`.
VENV := .venv
STAMP := $(VENV)/.vtr-installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup

demo: $(STAMP)
	$(VENV)/bin/vtr demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
