#!/usr/bin/env python3
"""Run the workspace's test binaries a few at a time, as `cargo test` would run them one
after the other.

Most integration tests wait on a device's 2 s cadence, a broker's timeout or an emulator
in real time, so one binary at a time leaves the machine mostly idle. This builds every
test binary once (`cargo test --no-run`, the arguments given), then runs them JOBS at a
time, each as cargo runs it: from its package's folder, with the package's CARGO_*
variables, with libtest's own arguments (after `--`). Each binary's output is printed
in one piece when it ends, its time after it; a failure is printed in full and fails
the run after every binary has run. The doc tests run last, through cargo.

    scripts/run-tests.py [--jobs N] [cargo test args...] [-- libtest args...]

The longest binaries start first, by the times of the previous run (kept in
target/test-times.json); a binary never seen before counts as long.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

TIMES = os.path.join("target", "test-times.json")


def build(cargo, cargo_args):
    """Build every test binary; return (name, package name, package dir, executable)."""
    command = [cargo, "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"run-tests: {' '.join(command)} failed ({proc.returncode})")
    binaries = []
    for line in proc.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message["profile"]["test"]:
            continue
        target = message["target"]
        package_dir = os.path.dirname(message["manifest_path"])
        # `tests/suite.rs` for integration tests, `unittests <crate>` for a crate's own.
        if "test" in target["kind"]:
            name = os.path.relpath(target["src_path"], os.path.dirname(package_dir))
        else:
            name = f"unittests {target['name']} ({' '.join(target['kind'])})"
        package = message["package_id"]
        binaries.append((name, package, package_dir, message["executable"]))
    return binaries


def package_env(package_id, package_dir, cargo):
    """The CARGO_* variables cargo sets when it runs a package's test binary."""
    # A package id is `path+file:///dir#name@version` or `...#version` (name = dir name).
    fragment = package_id.rsplit("#", 1)[-1]
    name, _, version = fragment.rpartition("@")
    if not name:
        name = os.path.basename(package_dir)
    env = dict(os.environ)
    env.update(
        {
            "CARGO": cargo,
            "CARGO_MANIFEST_DIR": package_dir,
            "CARGO_MANIFEST_PATH": os.path.join(package_dir, "Cargo.toml"),
            "CARGO_PKG_NAME": name,
            "CARGO_PKG_VERSION": version,
        }
    )
    return env


def run_one(binary, cargo, libtest_args):
    name, package, package_dir, executable = binary
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.run(
            [executable, *libtest_args],
            cwd=package_dir,
            env=package_env(package, package_dir, cargo),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out.seek(0)
        output = out.read()
    return name, proc.returncode, time.monotonic() - started, output


def main():
    argv = sys.argv[1:]
    libtest_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, libtest_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--jobs", type=int, default=2)
    options, cargo_args = parser.parse_known_args(argv)
    cargo = os.environ.get("CARGO", "cargo")

    binaries = build(cargo, cargo_args)
    try:
        with open(TIMES) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        previous = {}
    binaries.sort(key=lambda b: -previous.get(b[0], float("inf")))
    print(f"run-tests: {len(binaries)} test binaries, {options.jobs} at a time", flush=True)

    failed, times = [], {}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        running = [pool.submit(run_one, b, cargo, libtest_args) for b in binaries]
        for future in as_completed(running):
            name, code, took, output = future.result()
            times[name] = round(took, 2)
            # Libtest's own lines (the summary, any failure) in one piece per binary.
            print(f"\n     Running {name}\n{output.rstrip()}\n     {name}: {took:.1f} s", flush=True)
            if code != 0:
                failed.append(name)
    wall = time.monotonic() - started
    os.makedirs(os.path.dirname(TIMES), exist_ok=True)
    with open(TIMES, "w") as f:
        json.dump(times, f, indent=1, sort_keys=True)

    # Doc tests are compiled and run by rustdoc: only cargo runs them.
    doc = subprocess.run([cargo, "test", "--doc", *cargo_args, "--", *libtest_args])
    if doc.returncode != 0:
        failed.append("doc tests")

    print(f"\nrun-tests: {len(binaries)} binaries in {wall:.0f} s ({sum(times.values()):.0f} s one after the other)")
    if failed:
        print("run-tests: failed: " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
