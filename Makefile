# Filmless PACS: everyday commands.  `make run` for the demo, `make test` for the test suite.
#
#   make install       install the package and its test tools into $(PYTHON) (editable)
#   make system-deps   install the Debian packages the tests talk to (dcmtk, postgresql)
#   make viewer        install the OHIF Viewer (npm pack of a pinned release) into var/viewer
#   make run           import the sample studies and run the archive (DICOM port 11112,
#                      web and viewer on http://127.0.0.1:8080/)
#   make test          the whole test suite; extra pytest options: make test PYTEST_ARGS='-k scp'
#   make lint          ruff
#   make bench         the ingest benchmark (also installs Debian's orthanc to compare with)

PYTHON ?= python3
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The `pacs` command of this interpreter, whatever is first on PATH.
PACS ?= $(PYTHON) -m pacs.cli

# Re-installed when pyproject.toml changes; `rm -rf build` forces it.
INSTALL_STAMP := build/install.stamp

.PHONY: install system-deps viewer run test lint bench

install: $(INSTALL_STAMP)

$(INSTALL_STAMP): pyproject.toml
	$(PYTHON) -m pip install -e '.[test]'
	@mkdir -p $(dir $@)
	@touch $@

system-deps:
	bash scripts/install_system_deps.sh

viewer: install
	$(PACS) viewer install

run: install viewer
	$(PACS) import sample_dicom
	$(PACS) serve

test: system-deps install viewer
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PYTHON) -m ruff check pacs tests scripts

bench: install
	bash scripts/install_system_deps.sh --bench
	$(PYTHON) scripts/bench/ingest.py $(BENCH_ARGS)
