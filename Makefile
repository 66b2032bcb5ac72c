# The two commands of the README: `make demo` (main job) and `make test`.
VENV := .venv
STAMP := $(VENV)/.vtr-installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup mutation plant-bugs

demo: $(STAMP)
	$(VENV)/bin/vtr demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

# Mutation testing (not part of `make test`): every listed module, or MODULE=training/metrics.py;
# SAMPLE=150 draws that many mutants per module. Niced, as it keeps the cores busy for a long
# time. The table goes to docs/mutation.md.
mutation: $(STAMP)
	nice -n 15 $(VENV)/bin/python scripts/mutation.py $(if $(SAMPLE),--sample $(SAMPLE)) $(MODULE)

# The bugs issue 25 planted unseen, each planted again in a scratch copy: its test must fail.
plant-bugs: $(STAMP)
	$(VENV)/bin/python scripts/plant_bugs.py
