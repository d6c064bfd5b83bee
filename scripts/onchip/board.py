"""Board support for the QEMU test firmware (mps2-an385 = Cortex-M3, mps2-an386 = Cortex-M4F,
microbit = the nRF51's Cortex-M0): linker script, startup code with semihosting, SysTick, a
stack high-water mark, and the harness that runs embedded images through `siq_predict`.
Nothing of it is part of the generated library; it only hosts it (memcpy and memset come
from newlib, as on a real part).

Every board has code memory at 0x0 and SRAM at 0x20000000; the microbit's are small (256 KB
flash, 16 KB SRAM), so a firmware that does not fit fails at link time, as on the part. Output goes through Arm
semihosting (`bkpt 0xAB`). Time comes from SysTick on the processor clock, counted with its
wrap-around interrupt; under `qemu -icount shift=N` it advances with instructions, and the
firmware measures a calibration loop of a known instruction count so the host can turn ticks
into instructions without knowing the clock.
"""

from __future__ import annotations

__all__ = [
    "linker_script",
    "LINKER_SCRIPT",
    "STARTUP_C",
    "harness_c",
    "HOST_HARNESS_C",
    "CALIBRATION_LOOPS",
]

CALIBRATION_LOOPS = 1_000_000  # iterations of a 2-instruction loop (subs, bne)


def linker_script(flash: str = "4M", ram: str = "1M") -> str:
    """The firmware's memory map: flash at 0x0, SRAM at 0x20000000, of these lengths."""
    return (
        f"""
MEMORY
{{
  FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = {flash}
  RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = {ram}
}}
"""
        + _SECTIONS
    )


_SECTIONS = """ENTRY(siq_reset)
SECTIONS
{
  .text : {
    KEEP(*(.vectors))
    *(.text*)
    *(.rodata*)
    . = ALIGN(4);
  } > FLASH
  .data : {
    __data_start = .;
    *(.data*)
    . = ALIGN(4);
    __data_end = .;
  } > RAM AT > FLASH
  __data_load = LOADADDR(.data);
  .bss (NOLOAD) : {
    __bss_start = .;
    *(.bss*)
    *(COMMON)
    . = ALIGN(4);
    __bss_end = .;
  } > RAM
  __stack_limit = ALIGN(__bss_end, 8);
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}
"""
LINKER_SCRIPT = linker_script()

STARTUP_C = r"""
#include <stdint.h>

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern uint32_t __stack_limit, __stack_top;
int main(void);
void siq_reset(void);
void siq_fault(void);
void siq_systick(void);

volatile uint32_t siq_wraps;

/* semihosting: r0 = operation, r1 = argument */
static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void siq_puts(const char *s)
{
    semihost(0x04, s); /* SYS_WRITE0 */
}

void siq_exit(int code)
{
    /* SYS_EXIT: ADP_Stopped_ApplicationExit is status 0, anything else status 1 */
    semihost(0x18, (const void *)(uintptr_t)(code == 0 ? 0x20026u : 0x20024u));
    for (;;) {
    }
}

void siq_fault(void)
{
    siq_puts("SIQ-FAULT\n");
    siq_exit(1);
}

void siq_systick(void)
{
    siq_wraps++;
}

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

void siq_timer_start(void)
{
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    siq_wraps = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    while (SYST_CVR == 0) {
        /* the first reload from RVR is not a wrap */
    }
}

/* ticks since siq_timer_start (the counter runs down from 0xFFFFFF) */
#define ICSR (*(volatile uint32_t *)0xE000ED04u)

uint64_t siq_ticks(void)
{
    uint32_t w, v, pending;
    do {
        w = siq_wraps;
        v = SYST_CVR;
        pending = ICSR & (1u << 26); /* a wrap whose interrupt has not run yet */
    } while (w != siq_wraps);
    if (pending && v > 0x800000u) {
        w++;
    }
    return (uint64_t)w * 0x1000000u + (0x00FFFFFFu - v);
}

/* paint the free stack below the caller's frame, to find the deepest use later */
void siq_stack_paint(void)
{
    uint32_t here;
    uintptr_t end = (uintptr_t)&here - 64u; /* above: frames of the timer calls */
    uint32_t *p = &__stack_limit;
    while ((uintptr_t)p < end) {
        *p++ = 0xC0FFEE11u;
    }
}

uint32_t siq_stack_lowest(void)
{
    uint32_t *p = &__stack_limit;
    while (*p == 0xC0FFEE11u) {
        p++;
    }
    return (uint32_t)(uintptr_t)p;
}

void siq_calibrate(uint32_t loops)
{
    /* unified syntax: gcc hands Thumb-1 (Cortex-M0) inline assembly over in divided syntax */
    __asm__ volatile(".syntax unified\n1: subs %0, %0, #1\n bne 1b" : "+r"(loops) : : "cc");
}

void siq_reset(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end; dst++) {
        *dst = 0;
    }
    siq_exit(main());
}

__attribute__((section(".vectors"), used)) static void (*const siq_vectors[16])(void) = {
    (void (*)(void))(&__stack_top), siq_reset, siq_fault, siq_fault, siq_fault, siq_fault,
    siq_fault, 0, 0, 0, 0, siq_fault, siq_fault, 0, siq_fault, siq_systick,
};
"""


def harness_c(images: int, pixels_per_image: int, image_bytes: bytes) -> str:
    """main(): the null-argument check, then every image: logits, ticks and stack depth,
    printed as `L <image> <logit> ...`, `T <image> <ticks>`, then `C <calibration ticks>`,
    `S <stack bytes>` and `SIQ-OK`. Any missing line is a failure on the host side."""
    data = ", ".join(str(b) for b in image_bytes)
    return f"""
#include <stdint.h>
#include "siq_model.h"

void siq_puts(const char *s);
void siq_timer_start(void);
uint64_t siq_ticks(void);
void siq_stack_paint(void);
uint32_t siq_stack_lowest(void);
void siq_calibrate(uint32_t loops);

static const uint8_t images[{images * pixels_per_image}] = {{ {data} }};

static void put_int(int64_t v)
{{
    char buf[24];
    int i = 22;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
    buf[23] = 0;
    buf[i] = ' ';
    do {{
        buf[--i] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    }} while (u);
    if (v < 0) {{
        buf[--i] = '-';
    }}
    siq_puts(buf + i);
}}

int main(void)
{{
    int32_t logits[SIQ_NUM_CLASSES];
    uint32_t here, lowest = 0xFFFFFFFFu;
    uint64_t t0;
    int n, k;
    if (siq_predict(0, logits) != -1 || siq_predict(images, 0) != -1) {{
        siq_puts("SIQ-BADARGS\\n");
        return 1;
    }}
    siq_timer_start();
    for (n = 0; n < {images}; n++) {{
        uint64_t start;
        uint32_t low;
        siq_stack_paint();
        start = siq_ticks();
        if (siq_predict(images + n * {pixels_per_image}, logits) != 0) {{
            return 1;
        }}
        t0 = siq_ticks() - start;
        low = siq_stack_lowest();
        lowest = low < lowest ? low : lowest;
        siq_puts("L ");
        put_int(n);
        for (k = 0; k < SIQ_NUM_CLASSES; k++) {{
            put_int(logits[k]);
        }}
        siq_puts("\\nT ");
        put_int(n);
        put_int((int64_t)t0);
        siq_puts("\\n");
    }}
    t0 = siq_ticks();
    siq_calibrate({CALIBRATION_LOOPS}u);
    siq_puts("C ");
    put_int((int64_t)(siq_ticks() - t0));
    siq_puts("\\nS ");
    put_int((int64_t)((uint32_t)(uintptr_t)&here - lowest));
    siq_puts("\\nSIQ-OK\\n");
    return 0;
}}
"""


HOST_HARNESS_C = r"""
#include <stdio.h>
#include "siq_model.h"

/* images on stdin (C*H*W bytes each) -> int32 logits on stdout */
int main(void)
{
    static uint8_t px[SIQ_INPUT_CHANNELS * SIQ_INPUT_HEIGHT * SIQ_INPUT_WIDTH];
    int32_t logits[SIQ_NUM_CLASSES];
    if (siq_predict(NULL, logits) != -1 || siq_predict(px, NULL) != -1) {
        return 3;
    }
    while (fread(px, 1, sizeof px, stdin) == sizeof px) {
        if (siq_predict(px, logits) != 0) {
            return 2;
        }
        fwrite(logits, sizeof logits[0], SIQ_NUM_CLASSES, stdout);
    }
    return 0;
}
"""
