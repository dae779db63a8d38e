#!/usr/bin/env python3
"""Size report of the ESP32-C3 firmware, measured on the release ELF.

- App image: the bytes `esptool elf2image` writes for the `factory` partition (the image
  espflash and the ESP-IDF bootloader load), checked against --max-app.
- Flash sections: everything mapped from flash (code and read-only data).
- Static RAM: `.data` + `.bss` (the `.data*`, `.bss*` and `.noinit*` sections in the
  chip's DRAM range, the DRAM heap region included), checked against --max-ram. Not
  counted: the stack (the rest of RAM), the heap in reclaimed bootloader RAM
  (`.dram2_uninit`) and `.rwdata_dummy` (the DRAM alias of the code in IRAM, which is
  reported beside).
- Heap, connection and credential buffers: the sizes of the statics that hold them, from the symbol
  table.
- Main stack: `_stack_start_cpu0 - _stack_end_cpu0`, where esp-rtos runs the executor and so
  the driver's TLS handshake. With --rv32-figures (the `make rv32-budgets` run's output), the
  session's stack high-water measured on the emulated RV32IMC CPU must fit in half of it;
  --rv32 prints that run's table (instructions, est. ms at 160 MHz, stack, heap).

Exit status 1 when a limit is exceeded, with the figures printed either way.
"""

import argparse
import os
import re
import subprocess
import sys

# ESP32-C3 address ranges (TRM, "System and Memory").
DRAM = (0x3FC80000, 0x3FCE0000)
IRAM = (0x40380000, 0x403E0000)
DROM = (0x3C000000, 0x3C800000)
IROM = (0x42000000, 0x42800000)

# Statics worth naming in the report: (label, regex on the demangled symbol).
STATICS = [
    ("heap (DRAM region)", r"heap::init::HEAP$"),
    ("connection buffers (TLS, MQTT, TCP windows)", r"driver::BUFS$"),
    ("credential buffers", r"driver::FILES$"),
]


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def sections(elf, readelf):
    """(name, addr, size, type, flags) of every allocated section."""
    out = []
    for line in run(readelf, "-SW", elf).splitlines():
        m = re.match(
            r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)",
            line,
        )
        if not m:
            continue
        name, kind, addr, size, flags = m.groups()
        if "A" not in flags:
            continue
        out.append((name, int(addr, 16), int(size, 16), kind, flags))
    return out


def within(addr, region):
    return region[0] <= addr < region[1]


def symbols(elf, nm):
    """(demangled name, address, size) of every sized symbol."""
    out = []
    for line in run(nm, "-S", "-C", elf).splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4:
            out.append((parts[3], int(parts[0], 16), int(parts[1], 16)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("elf")
    ap.add_argument("--image", help="where to write the app image (default: ELF + .bin)")
    ap.add_argument("--max-app", type=int, default=1572864)
    ap.add_argument("--max-ram", type=int, default=163840)
    ap.add_argument("--binutils-prefix", default="riscv64-unknown-elf-")
    ap.add_argument("--rv32", help="the rv32-budgets table to print beside the sizes")
    ap.add_argument("--rv32-figures", help="the rv32-budgets run output (stack high-water)")
    args = ap.parse_args()

    if not os.path.isfile(args.elf):
        sys.exit(f"size-report: {args.elf}: no such file (build the release firmware first)")
    image = args.image or args.elf + ".bin"
    readelf = args.binutils_prefix + "readelf"
    nm = args.binutils_prefix + "nm"

    subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32c3", "elf2image",
         "--flash-mode", "dio", "--flash-size", "4MB", "--output", image, args.elf],
        check=True, stdout=subprocess.DEVNULL,
    )
    app = os.path.getsize(image)

    secs = sections(args.elf, readelf)
    # NOBITS placeholders (`.rotext_dummy`) only reserve address space.
    flash = [(n, s) for n, a, s, k, _ in secs
             if s and k != "NOBITS" and (within(a, DROM) or within(a, IROM))]
    static = [(n, s, k) for n, a, s, k, _ in secs
              if within(a, DRAM) and re.match(r"\.(data|bss|noinit)", n)]
    data = sum(s for n, s, k in static if k != "NOBITS")
    bss = sum(s for n, s, k in static if k == "NOBITS")
    reclaimed = sum(s for n, a, s, _, _ in secs if n == ".dram2_uninit")
    iram = [(n, s) for n, a, s, _, _ in secs if s and within(a, IRAM)]
    static_ram = data + bss

    syms = symbols(args.elf, nm)
    # The reclaimed heap region is not in .bss: symbol lookups for static RAM skip it.
    dram2 = [(a, a + s) for n, a, s, _, _ in secs if n == ".dram2_uninit"]

    def find(pattern):
        hits = [size for name, addr, size in syms
                if re.search(pattern, name) and not any(within(addr, r) for r in dram2)]
        return sum(hits) if hits else None

    print(f"ELF                 {args.elf}")
    print(f"app image           {app} B ({app / 1024:.1f} KiB) -> {image}"
          f"  [limit {args.max_app} B, {100 * app / args.max_app:.0f}%]")
    print("flash sections")
    for name, size in flash:
        print(f"  {name:<18}{size:>9} B")
    print(f"static RAM          {static_ram} B ({static_ram / 1024:.1f} KiB) = .data {data} + .bss {bss}"
          f"  [limit {args.max_ram} B, {100 * static_ram / args.max_ram:.0f}%]")
    if iram:
        print("code in IRAM        " + ", ".join(f"{n} {s} B" for n, s in iram))
    for label, pattern in STATICS:
        size = find(pattern)
        print(f"{label:<40}{'?' if size is None else str(size) + ' B':>10}")
    dram_heap = find(STATICS[0][1]) or 0
    print(f"{'heap (reclaimed bootloader RAM)':<40}{str(reclaimed) + ' B':>10}")
    print(f"{'heap total':<40}{str(dram_heap + reclaimed) + ' B':>10}")

    failed = []
    addr = {name: a for name, a, _ in syms}
    addr.update({m.group(2): int(m.group(1), 16) for m in re.finditer(
        r"^([0-9a-f]+) \S (_stack_\w+_cpu0)$", run(nm, args.elf), re.M)})
    stack = addr.get("_stack_start_cpu0", 0) - addr.get("_stack_end_cpu0", 0)
    print(f"{'main stack (driver task)':<40}{str(stack) + ' B':>10}")
    if args.rv32 and os.path.isfile(args.rv32):
        with open(args.rv32) as f:
            print(f.read(), end="")
    if args.rv32_figures:
        with open(args.rv32_figures) as f:
            used = [int(m.group(1)) for m in re.finditer(r"^figure \w+\.stack=(\d+)$", f.read(), re.M)]
        if not used or stack <= 0:
            failed.append("no session stack figure or no main stack in the ELF")
        elif max(used) > stack // 2:
            failed.append(f"session stack {max(used)} B over half the main stack ({stack // 2} B)")
        else:
            print(f"session stack (rv32) {max(used)} B = {100 * max(used) / stack:.0f}% of the main stack"
                  f"  [limit 50%]")
    if app > args.max_app:
        failed.append(f"app image {app} B exceeds {args.max_app} B")
    if static_ram > args.max_ram:
        failed.append(f"static RAM {static_ram} B exceeds {args.max_ram} B")
    for f in failed:
        print(f"size-report: FAIL: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
