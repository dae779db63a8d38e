# The verbs people type. `.ci/run` calls the README's test command: make deps && make test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
DEV_DIR := certs/dev
THING ?= ESPthing
AWS_DIR ?= certs/aws
AWS_OBSERVER_DIR ?= certs/aws-observer
# Where the dev image's device asks for time: the mock broker's SNTP server (`--sntp`).
SNTP_PORT ?= 1123
FLEET ?= 5000
# Which broker `make broker` runs: mock, mosquitto or rumqttd.
BROKER ?= mock
# Every tool is built in one invocation over the whole workspace and run from target/, so
# shared dependencies are built with one feature set: `cargo run -p X` for each tool
# would unify features per package and rebuild them every time another tool ran.
# hil's `rumqttd` feature: `--target rumqttd` and `make broker BROKER=rumqttd`.
BUILD_TOOLS = $(CARGO) build -q --workspace --bins --locked --features hil/rumqttd
BIN := target/debug

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# chromium: hil's report test renders the HTML report in a real (headless) browser.
APT_PACKAGES := libudev-dev pkg-config libclang-dev openssl mosquitto mosquitto-clients \
	socat gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf chromium qemu-system-misc
RISCV := riscv32imc-unknown-none-elf
PAHO_VERSION := 2.2.0
# The AWS API emulator `certs aws`'s tests run against (moto_server + boto3).
MOTO_VERSION := 5.2.1
INSTA_VERSION := 1.49.0
# Drives the libFuzzer targets (`make fuzz`); RUSTC_BOOTSTRAP=1 lets it build on stable.
CARGO_FUZZ_VERSION := 0.13.1
# Seconds per fuzz target in `make fuzz` (two run at a time): 20 for the full CI run's budget
# (30 min on 2 cores); `make fuzz FUZZ_SECONDS=600` for a longer look.
FUZZ_SECONDS ?= 20
# libFuzzer's seed: fixed so CI's runs reproduce; FUZZ_SEED=0 explores afresh.
FUZZ_SEED ?= 1
FUZZ_DIR := target/fuzz
CORE_FUZZ := firmware/core/fuzz
BROKER_FUZZ := mock-broker/fuzz
CORE_FUZZ_TARGETS := log_line_parser config_reader image_reader sntp_codec tls_record tls_handshake \
	tls_der mqtt_inbound
BROKER_FUZZ_TARGETS := broker_codec broker_policy
# How long `make soak` runs.
MINUTES ?= 30
# Builds the ESP32-C3 app image for the firmware size report.
ESPTOOL_VERSION := 5.6.0
# The ESP32-C3 firmware: its own cargo workspace, target dir and `.cargo/config.toml`.
FW_DIR := firmware/esp32c3
FW_ELF := $(FW_DIR)/target/$(RISCV)/release/firmware-esp32c3
FW_SIZE_REPORT := $(FW_DIR)/target/size-report.txt
# The core on an emulated RV32IMC CPU (qemu-system-riscv32, from qemu-system-misc): its own
# workspace; `.cargo/config.toml` holds the qemu runner.
RV32_DIR := firmware/rv32-budgets
RV32_OUT := $(RV32_DIR)/target/budgets
# Extra budgets.py flags, e.g. RV32_BUDGET_ARGS="--handshake-budget 1000" to see it fail.
RV32_BUDGET_ARGS ?=
# Where the bench's storage partition starts, from the firmware's partition table.
FW_STORAGE_OFFSET = $(shell awk -F, '$$1 == "storage" { gsub(/ /, "", $$4); print $$4 }' $(FW_DIR)/partitions.csv)

# Cross-compiling littlefs (C) for the ESP32-C3: gcc from Debian with picolibc headers,
# and bindgen pointed at the same headers.
CLANG_INCLUDE = $(lastword $(sort $(wildcard /usr/lib/llvm-*/lib/clang/*/include)))
export CC_riscv32imc_unknown_none_elf := riscv64-unknown-elf-gcc
export CFLAGS_riscv32imc_unknown_none_elf := -march=rv32imc_zicsr -mabi=ilp32 --specs=picolibc.specs
export BINDGEN_EXTRA_CLANG_ARGS_riscv32imc_unknown_none_elf = --target=riscv32 -I$(CLANG_INCLUDE) -I/usr/lib/picolibc/riscv64-unknown-elf/include

.PHONY: help deps test fmt clippy host-test core-riscv certs clean-certs aws-image aws-provision aws-observer aws-deprovision bench broker bench-broker hil snapshots fuzz fuzz-build fuzz-run \
	board-checks-niced firmware firmware-tests firmware-check hil-target soak structure qualify rv32-budgets

help:
	@echo "make hil     the HIL suite: virtual device + mock broker; JUnit and report in target/hil/"
	@echo "             (make hil BOARD=.. PORT=.. FIRMWARE=.. TARGET=.. ENDPOINT=.. FLASH=img PKI=dir SCENARIO=\"boot cadence\")"
	@echo "             (make hil TARGET=aws ENDPOINT=host OBSERVER_CERT=.. OBSERVER_KEY=.. OBSERVER_CA=AmazonRootCA1.pem)"
	@echo "make qualify AWS IoT Device Advisor's cases offline (virtual device + mock broker, ~2 min);"
	@echo "             verdicts, JUnit and qualification.html in target/qualify/ (make qualify CASE=\"MQTT_Connect ..\""
	@echo "             BOARD=.. FLASH=.. TARGET=aws POLICY=policy.json, as for make hil)"
	@echo "make snapshots  accept the current serial logs of boot, cadence, inbound as the snapshots"
	@echo "make deps    install system packages and rustup targets (idempotent)"
	@echo "make test    everything CI checks: fmt, clippy, host tests, no_std core for $(RISCV),"
	@echo "             the ESP32-C3 firmware (size limits) and its on-target tests (compiled)"
	@echo "make firmware  ESP32-C3 release image + size report (app image, flash, static RAM, heap,"
	@echo "             handshake instructions/stack/heap from make rv32-budgets)"
	@echo "make rv32-budgets  the core's vectors and a TLS + MQTT session on an emulated RV32IMC CPU:"
	@echo "             instructions, est. ms on the ESP32-C3, stack, heap; fails over the budgets"
	@echo "make hil-target  on-target tests on a board over USB-JTAG (probe-rs; flashes $(DEV_DIR)/flash.img)"
	@echo "make fuzz    every fuzz target for FUZZ_SECONDS (default 20) each; fails on any crash"
	@echo "make soak    one virtual device vs the mock broker for MINUTES (default 30) with inbound"
	@echo "             traffic and faults: QoS 1 loss and RSS table, target/soak/ (not in CI)"
	@echo "make certs   test PKI and flash image in $(DEV_DIR)/ (kept if present)"
	@echo "make broker  the mock AWS IoT broker with the test PKI: MQTT on :8883, SNTP on :$(SNTP_PORT),"
	@echo "             the thing's and the observer's policies, a control API; prints how to watch"
	@echo "             (make broker BROKER=mosquitto: mosquitto with the same PKI on :8883, the mock for SNTP)"
	@echo "             (make broker BROKER=rumqttd: rumqttd with the same PKI, MQTT 5 on :8883 and"
	@echo "             MQTT 3.1.1 on :8884, the mock for SNTP)"
	@echo "make bench-broker  fleet of $(FLEET) mTLS clients against the mock broker"
	@echo "make bench   reconnect figures vs the mock broker (outages, flapping, fleet; ~20 min),"
	@echo "             then cadence and connect figures vs mosquitto"
	@echo "             times (P-256, RSA), RAM in TLS/MQTT buffers"
	@echo "make aws-image DOWNLOADS=dir ENDPOINT=host [THING=name WIFI_SSID=s]"
	@echo "             (WiFi passphrase from the environment: read -rs WIFI_PASSWORD; export WIFI_PASSWORD)"
	@echo "             AWS console downloads -> $(AWS_DIR)/flash.img"
	@echo "make aws-provision THING=name [REGION=r PROFILE=p WIFI_SSID=s]"
	@echo "             AWS account -> thing, certificate, policy, $(AWS_DIR)/flash.img (AWS SDK; no console)"
	@echo "make aws-observer [REGION=r PROFILE=p]   the rig's observer identity in $(AWS_OBSERVER_DIR)/"
	@echo "make aws-deprovision THING=name   delete what aws-provision created (and aws-observer's)"

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "system packages: all present"; fi
	rustup target add $(RISCV)
	rustup component add rustfmt clippy
	@# `cargo insta review` for the serial-log snapshots (hil/README.md).
	@cargo insta --version 2>/dev/null | grep -q "$(INSTA_VERSION)" \
		|| $(CARGO) install cargo-insta --version $(INSTA_VERSION) --locked
	@# A third-party MQTT client for the broker's interop tests.
	@python3 -c "import paho.mqtt.client" 2>/dev/null || python3 -m pip install --quiet "paho-mqtt==$(PAHO_VERSION)" \
		|| python3 -m pip install --quiet --break-system-packages "paho-mqtt==$(PAHO_VERSION)"
	@# moto's AWS API server: `certs aws provision` is tested against it.
	@python3 -c "import moto, moto.server, boto3, sys; sys.exit(moto.__version__ != '$(MOTO_VERSION)')" 2>/dev/null \
		|| python3 -m pip install --quiet "moto[server]==$(MOTO_VERSION)" \
		|| python3 -m pip install --quiet --break-system-packages "moto[server]==$(MOTO_VERSION)"
	@# esptool makes the ESP32-C3 app image the firmware size report measures.
	@python3 -c "import esptool, sys; sys.exit(esptool.__version__ != '$(ESPTOOL_VERSION)')" 2>/dev/null \
		|| python3 -m pip install --quiet "esptool==$(ESPTOOL_VERSION)" \
		|| python3 -m pip install --quiet --break-system-packages "esptool==$(ESPTOOL_VERSION)"
	@# cargo-fuzz builds the libFuzzer targets of `make fuzz`.
	@cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $(CARGO_FUZZ_VERSION)" \
		|| $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

# Two lanes after the lints. The host tests (their build, then the test binaries two at
# a time: most of them wait on a device's 2 s cadence, a broker's timeout or an emulator
# in real time) in the foreground; the checks that only need CPU (the core for the
# board's target, the firmware, the fuzz targets' build) niced in the background, so they
# take the CPU the tests leave idle and never the CPU a test wants. Then the fuzzers run
# on the whole machine.
test: fmt clippy structure
	$(MAKE) --no-print-directory -j2 host-test board-checks-niced BUILD_TOOLS="$(BUILD_TOOLS)"
	$(MAKE) --no-print-directory fuzz-run
# Within `make test` the tools come from host-test's build: `cargo test --no-run` puts the
# workspace's binaries (built with every feature, as the tests use them) in target/debug
# again without compiling anything, where `cargo build --bins` would build the whole
# workspace a third time with another feature set (about 7 min of CPU).
test: BUILD_TOOLS = $(CARGO) test -q --workspace --all-features --locked --no-run

# `make test`'s background lane; its output goes to BOARD_LOG, printed on failure (the
# size report's lines at the end otherwise).
BOARD_LOG := target/board-checks.log
board-checks-niced:
	@mkdir -p $(dir $(BOARD_LOG))
	@echo "board checks (core-riscv firmware-check fuzz-build) niced in the background: $(BOARD_LOG)"
	@nice -n 19 $(MAKE) --no-print-directory core-riscv firmware-check fuzz-build BUILD_TOOLS="$(BUILD_TOOLS)" \
		> $(BOARD_LOG) 2>&1 || { cat $(BOARD_LOG); echo "make test: the board checks failed (log above, in $(BOARD_LOG))" >&2; exit 1; }
	@echo "board checks passed; the firmware's size report:"
	@cat $(FW_SIZE_REPORT)

fmt:
	$(CARGO) fmt --all -- --check

# No import circle between a crate's top-level modules (each can be read and changed on
# its own): scripts/import-cycles.py names any it finds.
structure:
	@# The check itself must catch a circle: a two-module fixture has one.
	@! python3 scripts/import-cycles.py scripts/fixtures/import-circle >/dev/null
	python3 scripts/import-cycles.py firmware/core/src firmware/host-time/src firmware/virtual/src firmware/esp32c3/src $(RV32_DIR)/src \
		mock-broker/src certs/src hil/src

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

# The test binaries run two at a time (scripts/run-tests.py; TEST_JOBS=1 for one after
# the other, as `cargo test` runs them); `cargo test` itself runs the doc tests.
TEST_JOBS ?= 2
host-test:
	python3 scripts/run-tests.py --jobs $(TEST_JOBS) --workspace --all-features --locked

# The core must build without std for the board's target, with every optional part.
core-riscv:
	$(CARGO) build -p firmware-core --target $(RISCV) --locked
	$(CARGO) build -p firmware-core --target $(RISCV) --features flash-image,tls,mqtt --locked

# The ESP32-C3 firmware, release build, with its size report (fails over the limits:
# app image 1.5 MiB, static RAM 160 KiB; the session's stack from rv32-budgets over half
# the board's main stack).
firmware: rv32-budgets
	cd $(FW_DIR) && $(CARGO) build --release --locked
	python3 $(FW_DIR)/size-report.py $(FW_ELF) --max-app 1572864 --max-ram 163840 \
		--rv32 $(RV32_OUT)/summary.txt --rv32-figures $(RV32_OUT)/run1.txt | tee $(FW_SIZE_REPORT)

# The core on an emulated RV32IMC CPU (qemu -machine virt, -icount shift=0, semihosting):
# the core's vectors and a replayed TLS 1.3 + MQTT session per device key, run twice (the
# counts must agree exactly), judged by budgets.py (instructions, stack, heap). The
# emulator's exit status fails it on any failed vector or session.
rv32-budgets:
	cd $(RV32_DIR) && $(CARGO) fmt -- --check
	cd $(RV32_DIR) && $(CARGO) build --release --locked
	@mkdir -p $(RV32_OUT)
	@# timeout: a hang guard, with room for a run niced beside the tests (make test).
	cd $(RV32_DIR) && for run in 1 2; do \
		timeout 300 $(CARGO) run -q --release --locked > target/budgets/run$$run.txt \
			|| { cat target/budgets/run$$run.txt; echo "rv32-budgets: the emulated run failed" >&2; exit 1; }; \
	done
	python3 $(RV32_DIR)/budgets.py $(RV32_OUT)/run1.txt --again $(RV32_OUT)/run2.txt \
		--summary $(RV32_OUT)/summary.txt $(RV32_BUDGET_ARGS)
	cd $(RV32_DIR) && $(CARGO) clippy --release --locked -- -D warnings

# Fuzzing that runs: both fuzz crates (their own workspaces, sharing one target dir) are
# built with cargo-fuzz (sanitizer coverage + AddressSanitizer), then every target runs
# for FUZZ_SECONDS from its seeds in git plus what earlier runs found. Any crash, hang
# or leak fails; the table shows libFuzzer's final coverage (cov: edges, ft: features).
fuzz: fuzz-build fuzz-run

fuzz-build:
	cd $(CORE_FUZZ) && $(CARGO) fmt -- --check
	cd $(BROKER_FUZZ) && $(CARGO) fmt -- --check
	@# cargo-fuzz has no --locked: check the committed lock files are current first.
	cd $(CORE_FUZZ) && $(CARGO) metadata --locked --format-version 1 >/dev/null
	cd $(BROKER_FUZZ) && $(CARGO) metadata --locked --format-version 1 >/dev/null
	cd $(CORE_FUZZ) && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build --target-dir $(abspath $(FUZZ_DIR))
	cd $(BROKER_FUZZ) && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build --target-dir $(abspath $(FUZZ_DIR))

fuzz-run:
	FUZZ_SEED=$(FUZZ_SEED) $(CORE_FUZZ)/run-bounded.sh $(FUZZ_DIR)/x86_64-unknown-linux-gnu/release $(FUZZ_DIR) $(FUZZ_SECONDS) \
		$(foreach t,$(CORE_FUZZ_TARGETS),$(CORE_FUZZ):$(t)) $(foreach t,$(BROKER_FUZZ_TARGETS),$(BROKER_FUZZ):$(t))

# A soak, not a CI step: one virtual device against the in-process mock broker for
# MINUTES with inbound QoS 1 traffic and a fault a minute; checks QoS 1 loss both ways
# and flat RSS, prints the per-minute RSS table, writes target/soak/{rss.csv,summary.json}.
soak:
	@# `--example` would build only the example: the device binary is built on its own.
	$(CARGO) build -q -p virtual-device --locked
	$(CARGO) run -q -p hil --example soak --locked -- --minutes $(MINUTES) --out target/soak

# The on-target tests, compiled (release profile: shares the firmware's build). They embed
# the broker certificate of the test PKI, which they verify on the chip.
firmware-tests: certs
	cd $(FW_DIR) && SERVER_CERT_DER=$(abspath $(DEV_DIR)/server.der) \
		$(CARGO) test --release --locked --test on_target --no-run

# What CI checks for the firmware workspace: format, lints, size limits, tests compile,
# and the board's HAL-free parts tested on the host (host-tests/: its own workspace).
firmware-check: firmware firmware-tests
	cd $(FW_DIR)/host-tests && $(CARGO) test --locked
	cd $(FW_DIR) && $(CARGO) fmt -- --check
	cd $(FW_DIR) && SERVER_CERT_DER=$(abspath $(DEV_DIR)/server.der) \
		$(CARGO) clippy --release --locked --lib --bins --test on_target -- -D warnings

# The on-target tests on a board (USB-JTAG, probe-rs): the test PKI's image goes into the
# storage partition, then probe-rs flashes and runs each test (bootloader and partition
# table from the firmware's partitions.csv).
hil-target: certs
	probe-rs download --chip esp32c3 --binary-format bin --base-address $(FW_STORAGE_OFFSET) $(DEV_DIR)/flash.img
	cd $(FW_DIR) && SERVER_CERT_DER=$(abspath $(DEV_DIR)/server.der) \
		CARGO_TARGET_RISCV32IMC_UNKNOWN_NONE_ELF_RUNNER="probe-rs run --chip esp32c3 --idf-partition-table partitions.csv" \
		$(CARGO) test --release --locked --test on_target

# The HIL suite: virtual device + in-process mock broker by default; variables pass through.
HIL_DEVICE_ARGS = $(if $(BOARD),--board $(BOARD)) $(if $(PORT),--port $(PORT)) $(if $(FIRMWARE),--firmware $(FIRMWARE)) \
	$(if $(TARGET),--target $(TARGET)) $(if $(ENDPOINT),--endpoint $(ENDPOINT)) \
	$(if $(FLASH),--flash $(FLASH),$(if $(filter aws,$(TARGET)),--flash $(AWS_DIR)/flash.img)) \
	$(if $(PKI),--pki $(PKI)) \
	$(if $(OBSERVER_CERT),--observer-cert $(OBSERVER_CERT)) $(if $(OBSERVER_KEY),--observer-key $(OBSERVER_KEY)) \
	$(if $(OBSERVER_CA),--observer-ca $(OBSERVER_CA))
HIL_ARGS = $(HIL_DEVICE_ARGS) $(foreach s,$(SCENARIO),--scenario $(s))

# The serial-log snapshots are compared when the run is the rig's own (virtual device,
# mock broker, its own images): they hold that setup's logs.
SNAPSHOT_ARGS = $(if $(or $(BOARD),$(TARGET),$(FLASH),$(PKI)),,--snapshots hil/tests/snapshots)

hil: certs
	@if [ "$(TARGET)" = aws ] && [ -z "$(ENDPOINT)" ]; then \
		echo "make hil TARGET=aws: set ENDPOINT=xxxx-ats.iot.REGION.amazonaws.com and the observer's" \
		     "OBSERVER_CERT=.. OBSERVER_KEY=.. OBSERVER_CA=AmazonRootCA1.pem; the device image comes from" \
		     "FLASH=img or $(AWS_DIR)/flash.img (make aws-image DOWNLOADS=.. ENDPOINT=..)" >&2; exit 2; fi
	$(BUILD_TOOLS)
	$(BIN)/hil run $(HIL_ARGS) $(SNAPSHOT_ARGS) --junit target/hil/junit.xml --report target/hil/report

# Device Advisor's qualification cases, offline: the same device and target options as
# `make hil`, CASE="A B" to pick cases, POLICY=file for Security_Device_Policies.
qualify: certs
	$(BUILD_TOOLS)
	$(BIN)/hil qualify $(HIL_DEVICE_ARGS) $(foreach c,$(CASE),--case $(c)) \
		$(if $(POLICY),--policy $(POLICY)) --junit target/qualify/junit.xml --report target/qualify

# Accept the current serial logs of boot, cadence and inbound as the snapshots (after
# reviewing the diff `make hil` printed; `cargo insta review` does it one by one).
snapshots:
	$(BUILD_TOOLS)
	$(BIN)/hil run --scenario boot --scenario cadence --scenario inbound \
		--snapshots hil/tests/snapshots --update-snapshots

# A report, not a test: cadence error over 100 publishes, connect/reconnect latency.
# Reconnect figures (about 20 min): outages of 1, 3, 10, 60 s and a flapping link against
# the mock broker with real devices, and a simulated fleet's CONNECT storm; results in
# target/bench/reconnect/. Then the handshake and cadence figures against mosquitto.
bench:
	$(CARGO) build -q --release -p virtual-device --locked
	$(CARGO) run -q --release -p hil --example reconnect --locked -- --out target/bench/reconnect
	$(CARGO) bench -p virtual-device --bench device --locked

# BROKER=mosquitto: mosquitto with an mTLS listener on :8883 serving certs/dev (the
# certificate's CN as user name), and the mock broker for SNTP only (its MQTT port is
# a free one nobody uses), stopped with mosquitto. It runs as the invoking user (run as
# root, mosquitto would otherwise switch to `mosquitto`, who cannot read certs/dev's key).
# BROKER=rumqttd: rumqttd (`hil rumqttd-broker`) with the same PKI and client
# certificates required, MQTT 5 on :8883 and MQTT 3.1.1 on :8884 (one MQTT version per
# rumqttd listener), and the mock broker for SNTP.
broker: certs
	$(BUILD_TOOLS)
	@case "$(BROKER)" in \
	mock) exec $(BIN)/mock-broker serve --certs $(DEV_DIR) --sntp 127.0.0.1:$(SNTP_PORT) --control 127.0.0.1:0 ;; \
	mosquitto) \
		mkdir -p target/broker; \
		printf '%s\n' "user $$(id -un)" 'per_listener_settings false' 'persistence false' 'log_dest stdout' \
			'allow_anonymous false' 'listener 8883 127.0.0.1' "cafile $(abspath $(DEV_DIR))/ca.pem" \
			"certfile $(abspath $(DEV_DIR))/server.pem" "keyfile $(abspath $(DEV_DIR))/server.key.pem" \
			'require_certificate true' 'use_identity_as_username true' > target/broker/mosquitto.conf; \
		$(BIN)/mock-broker serve --certs $(DEV_DIR) --port 0 --sntp 127.0.0.1:$(SNTP_PORT) >/dev/null 2>&1 & sntp=$$!; \
		trap 'kill $$sntp 2>/dev/null' EXIT; \
		echo "mosquitto on 127.0.0.1:8883 (target/broker/mosquitto.conf), SNTP on 127.0.0.1:$(SNTP_PORT); watch the device:"; \
		echo "  mosquitto_sub -h localhost -p 8883 --cafile $(DEV_DIR)/ca.pem --cert $(DEV_DIR)/observer.pem --key $(DEV_DIR)/observer.key.pem -i hil-observer-watch -t outTopic -v"; \
		mosquitto -c target/broker/mosquitto.conf ;; \
	rumqttd) \
		$(BIN)/mock-broker serve --certs $(DEV_DIR) --port 0 --sntp 127.0.0.1:$(SNTP_PORT) >/dev/null 2>&1 & sntp=$$!; \
		trap 'kill $$sntp 2>/dev/null' EXIT; \
		echo "rumqttd on 127.0.0.1:8883 (MQTT 5: the device) and 127.0.0.1:8884 (MQTT 3.1.1), SNTP on 127.0.0.1:$(SNTP_PORT); watch the device:"; \
		echo "  mosquitto_sub -h localhost -p 8883 -V mqttv5 --cafile $(DEV_DIR)/ca.pem --cert $(DEV_DIR)/observer.pem --key $(DEV_DIR)/observer.key.pem -i hil-observer-watch -t outTopic -v"; \
		echo "send it a message (MQTT 3.1.1 listener):"; \
		echo "  mosquitto_pub -h localhost -p 8884 --cafile $(DEV_DIR)/ca.pem --cert $(DEV_DIR)/observer.pem --key $(DEV_DIR)/observer.key.pem -i hil-observer-send -t inTopic -m '{\"message\": \"hello from the bench\"}'"; \
		$(BIN)/hil rumqttd-broker --dir $(DEV_DIR) --port 8883 --observer-port 8884 ;; \
	*) echo "make broker: BROKER=$(BROKER)? choose mock (default), mosquitto or rumqttd" >&2; exit 2 ;; \
	esac

bench-broker:
	$(CARGO) run -q --release -p mock-broker --locked --example fleet -- --clients $(FLEET) --seconds 20

certs: $(DEV_DIR)/flash.img

$(DEV_DIR)/flash.img:
	$(BUILD_TOOLS)
	@if [ ! -f $(DEV_DIR)/ca.pem ]; then \
		$(BIN)/certs init --out $(DEV_DIR) --thing $(THING); \
	fi
	$(BIN)/certs image --creds $(DEV_DIR)/device --out $@ --ntp 127.0.0.1:$(SNTP_PORT)

clean-certs:
	rm -rf $(DEV_DIR)

# The AWS console's three downloads -> DER files -> flash image, in one command.
# The WiFi passphrase never goes on a command line (every user sees those in `ps`):
# certs reads WIFI_PASSWORD from the environment, which make passes on to the recipe.
aws-image:
	@test -n "$(DOWNLOADS)" || { echo "aws-image: set DOWNLOADS=<folder with the console downloads>" >&2; exit 2; }
	@test -n "$(ENDPOINT)" || { echo "aws-image: set ENDPOINT=<xxxx-ats.iot.REGION.amazonaws.com>" >&2; exit 2; }
	$(BUILD_TOOLS)
	@pick() { ls -1 $(DOWNLOADS)/$$1 2>/dev/null | head -1; }; \
	cert=$$(pick '*-certificate.pem.crt*'); key=$$(pick '*-private.pem.key*'); ca=$$(pick 'AmazonRootCA1.pem*'); \
	for f in "cert:$$cert" "key:$$key" "ca:$$ca"; do \
		[ -n "$${f#*:}" ] || { echo "aws-image: no $${f%%:*} file in $(DOWNLOADS)" >&2; exit 2; }; done; \
	$(BIN)/certs import --cert "$$cert" --key "$$key" --ca "$$ca" --out $(AWS_DIR)/device --force; \
	$(BIN)/certs image --creds $(AWS_DIR)/device --out $(AWS_DIR)/flash.img --force --endpoint "$(ENDPOINT)" \
		--client-id "$(THING)" \
		$(if $(WIFI_SSID),--wifi-ssid "$(WIFI_SSID)")

# The same from an AWS account, no console: credentials and region as the AWS CLI finds
# them (AWS_PROFILE, AWS_REGION, SSO, ...); REGION= and PROFILE= override. The `aws`
# feature adds the AWS SDK to certs (a longer first build).
AWS_ACCOUNT_ARGS = $(if $(REGION),--region $(REGION)) $(if $(PROFILE),--profile $(PROFILE))

aws-provision:
	$(BUILD_TOOLS) --features certs/aws
	$(BIN)/certs aws provision --thing "$(THING)" --out $(AWS_DIR) $(AWS_ACCOUNT_ARGS) \
		$(if $(WIFI_SSID),--wifi-ssid "$(WIFI_SSID)")

aws-observer:
	$(BUILD_TOOLS) --features certs/aws
	$(BIN)/certs aws observer --out $(AWS_OBSERVER_DIR) $(AWS_ACCOUNT_ARGS)

aws-deprovision:
	$(BUILD_TOOLS) --features certs/aws
	@if [ -f $(AWS_OBSERVER_DIR)/aws-manifest.json ]; then \
		$(BIN)/certs aws deprovision --observer hil-observer --out $(AWS_OBSERVER_DIR) $(AWS_ACCOUNT_ARGS); fi
	$(BIN)/certs aws deprovision --thing "$(THING)" --out $(AWS_DIR) $(AWS_ACCOUNT_ARGS)
