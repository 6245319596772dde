# fltool: the two commands of the README, and the pieces they are made of.
#   make train   set up (if needed), then train + evaluate the default RetinaNet on the embedded dataset
#   make test    set up (if needed), then run the test suite
#   make reproduce  every run behind REPRODUCTION.md, then its tables (resumable; on 2 cores about 2 hours for the
#                   scale part and 23-42 for the regime part, depending on the machine: estimated from measured runs,
#                   see REPRODUCTION.md's "Run time of this section"; LONG_ITERS="2400 4800" about 11.5-18)
.PHONY: setup train test bench reproduce clean

PY := .venv/bin/python

setup:
	@scripts/setup.sh

train: setup
	$(PY) -m fltool train

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/focal_loss.py

reproduce: setup
	scripts/reproduce.sh

clean:
	rm -rf work_dirs .pytest_cache
