# One command to set up and serve, one to set up and test. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# laion-clap's own code, the reference of tests/bridge/encode/test_laion_clap.py, lives apart
# from the project's environment (tests/laion-clap-reference.txt says why).
LAION_REF := $(VENV)/laion-clap-ref
LAION_STAMP := $(LAION_REF)/.installed-stamp

.PHONY: serve test cluster fuzz lint typecheck audit check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,milvus,milvus-server,postgres]'
	touch $(STAMP)

$(LAION_STAMP): tests/laion-clap-reference.txt $(STAMP)
	rm -rf $(LAION_REF)
	$(BIN)/python -m pip install -q --no-deps --target $(LAION_REF) -r tests/laion-clap-reference.txt
	rm -rf $(LAION_REF)/tests $(LAION_REF)/bin $(LAION_REF)/torchaudio/lib
	touch $(LAION_STAMP)

serve: $(STAMP)
	$(BIN)/python -m app

# Scale-out development: a Milvus server and REPLICAS API replicas on ports from CLUSTER_PORT,
# sharing CLUSTER_DIR (scripts/cluster.py). Ctrl-C or SIGTERM stops them all.
REPLICAS ?= 2
CLUSTER_PORT ?= 8001
CLUSTER_DIR ?= var/cluster
cluster: $(STAMP)
	$(BIN)/python scripts/cluster.py --replicas $(REPLICAS) --port $(CLUSTER_PORT) --dir $(CLUSTER_DIR)

test: $(STAMP) $(LAION_STAMP)
	$(BIN)/python -m pytest -q

# The API contract at length, for release checks: the schemathesis run of make test
# (tests/contract) with FUZZ_EXAMPLES examples per operation and a fresh seed (CONTRACT_SEED
# to replay one).
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	CONTRACT_EXAMPLES=$(FUZZ_EXAMPLES) CONTRACT_SEED=$${CONTRACT_SEED:-$$RANDOM} $(BIN)/python -m pytest -q -s tests/contract

lint: $(STAMP)
	$(BIN)/ruff check bridge app tests scripts
	$(BIN)/ruff format --check bridge app tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Known vulnerabilities in the packages the images ship (pip-audit; docs/security.md): fails
# on one that is not accepted, says "audit NOT PERFORMED" when the service is out of reach.
audit: $(STAMP)
	$(BIN)/python scripts/audit.py

check: lint typecheck audit test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
