# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install what they need (torch pinned to the CPU build that pip finds locally).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/ip

.PHONY: demo test browser lint bench clean

$(BIN)/oodseg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/oodseg
	$(BIN)/oodseg crossval --dataset indian_pines --out $(OUT) --overwrite

# The HTML report test opens the page in a real headless browser: Chromium from the Debian packages
# (installed when missing and this user may; otherwise that one check skips, saying why).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || true

test: $(BIN)/oodseg browser
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/python -m pytest

bench: $(BIN)/oodseg
	$(BIN)/python bench/crossval_time.py

clean:
	rm -rf $(VENV) runs
