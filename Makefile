# fltool: the two commands of the README, and the pieces they are made of.
#   make train   set up (if needed), then train + evaluate the default RetinaNet on the embedded dataset
#   make test    set up (if needed), then run the test suite
#   make reproduce  every run behind REPRODUCTION.md, then its tables (resumable; how long it takes: REPRODUCTION.md,
#                   "Run time")
.PHONY: setup train test bench reproduce clean

PY := .venv/bin/python

setup:
	@scripts/setup.sh

train: setup
	$(PY) -m fltool train

test: setup
	$(PY) -m ruff check .
	.venv/bin/lint-imports
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/focal_loss.py

reproduce: setup
	scripts/reproduce.sh

clean:
	rm -rf work_dirs .pytest_cache
