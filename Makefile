# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install what they need; constraints.txt pins torch to its CPU build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet -c constraints.txt
# The demo holds out the scene's four largest classes (the folds with the most test pixels);
# `make paper` runs every class with the fully supervised bound.
DEMO_CLASSES := Soybean-mintill,Corn-notill,Woods,Soybean-notill
SEED ?= 0

.PHONY: demo paper test docs check-docs browser lint bench clean

$(BIN)/oodseg: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) -e '.[test]'
	touch $@

$(BIN)/mkdocs: $(BIN)/oodseg
	$(PIP) -e '.[docs]'
	touch $@

demo: $(BIN)/oodseg
	$(BIN)/oodseg crossval --hold-out $(DEMO_CLASSES) --no-baselines --seed $(SEED) \
		--out runs/demo-s$(SEED) --overwrite

paper: $(BIN)/oodseg
	$(BIN)/oodseg crossval --seed $(SEED) --out runs/paper-s$(SEED) --overwrite

# The HTML report test opens the page in a real headless browser: Chromium from the Debian packages
# (installed when missing and this user may; otherwise that one check skips, saying why).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || true

lint: $(BIN)/oodseg
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/lint-imports

# SLOW=1 (as CI runs it) adds the end-to-end runs marked slow.
test: lint browser
	$(BIN)/python -m pytest $(if $(SLOW),,-m "not slow")

# The documentation site, built offline into site/; --strict turns every warning into an error.
docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# README and docs figures regenerated from the committed runs in docs/runs/.
check-docs: $(BIN)/oodseg
	$(BIN)/python scripts/results_doc.py --check

bench: $(BIN)/oodseg
	$(BIN)/python bench/crossval_time.py

clean:
	rm -rf $(VENV) runs site
