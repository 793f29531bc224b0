# One command to set up and test, one to set up and run. See README.md.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck unit run cluster bench bench-tools clean proto

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck unit

run: $(STAMP)
	$(BIN)/sentinel-server --port 9092 --data ./data --metrics-port 9100

# Three brokers replicating with Raft on this machine (data in ./cluster-data).
cluster: $(STAMP)
	$(BIN)/python -m sentinel.cluster.local --data ./cluster-data

# The Kafka benchmark drives the broker with C clients (kcat, librdkafka) beside Redis
# Streams: Debian's packages, installed here when missing.
bench-tools:
	@command -v kcat >/dev/null && command -v redis-server >/dev/null \
		&& test -f /usr/include/librdkafka/rdkafka.h \
		|| (apt-get update -qq && apt-get install -y -qq kcat redis-server redis-tools librdkafka-dev)

bench: $(STAMP) bench-tools
	@for b in bench/bench_*.py; do echo "# $$b" >&2; $(BIN)/python $$b || exit 1; done

# Regenerate the gRPC/protobuf modules from proto/sentinel.proto (committed, so that a
# fresh clone needs no code generation).
proto: $(STAMP)
	cd proto && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=../src/sentinel/proto_gen \
		--grpc_python_out=../src/sentinel/proto_gen --pyi_out=../src/sentinel/proto_gen sentinel.proto
	sed -i 's/^import sentinel_pb2 as/from . import sentinel_pb2 as/' src/sentinel/proto_gen/sentinel_pb2_grpc.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
