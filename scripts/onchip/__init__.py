"""The on-chip test harness (dev tooling, not part of the installed product): builds a bundle's
generated C library with the host gcc, or cross-compiled into a firmware for QEMU's Cortex-M3 /
Cortex-M4 boards, and runs it. tests/onchip and bench/bench_onchip.py use it.

    toolchain  host and firmware builds, QEMU runs, sizes and symbols
    board      the firmware's startup, linker script, semihosting harness and cycle counter
"""
