# Two commands for a fresh machine:
#   make reproduce   set up .venv, then run every notebook in order at the default profile (papermill)
#   make test        set up .venv, then the whole test suite (pytest + papermill smoke runs + nbval)
#   make bench       set up .venv, then time the attack and training loops (fp32, torchattacks, fast path)
# The data root comes from INTERPRETGAN_DATA (else ./data); artifacts go to INTERPRETGAN_ARTIFACTS (else ./artifacts).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := interpretgan

.PHONY: setup reproduce test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))"
	touch $(STAMP)
	@echo "environment ready in $(VENV)/: activate it with  source $(BIN)/activate  (the README's commands assume it)"

setup: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m interpretgan.reproduce --profile default $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m interpretgan.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
