# Multiboot2 header and 32-bit entry: GRUB or coreboot -> long mode -> Rust
# `kernel_main`.
#
# Machine state on entry, from either loader: protected mode, paging off,
# flat 4 GiB CS/DS. From a multiboot2 loader (Multiboot2 spec 3.3, i386):
# EAX = 0x36d76289, EBX = physical address of the boot information,
# interrupts off, no valid stack and no valid GDT. From coreboot (an ELF
# payload; docs/coreboot.md): a valid stack whose one cdecl argument, at
# 4(%esp), is the address of the coreboot tables, and no magic in EAX.
# Which loader it was is decided in Rust (bootinfo::gather), from all three.

.set MB2_MAGIC,        0xe85250d6     # header magic (spec 3.1.1)
.set MB2_ARCH_I386,    0
.set MB2_TAG_OPTIONAL, 1              # header tag flags bit 0 (spec 3.1.3)
.set COM1,             0x3f8

# ------------------------------------------------------------------------
.section .multiboot2, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))

    # Information request tag (spec 3.1.4): GRUB must provide these or fail.
    .balign 8
mb2_info_request:
    .short 1, 0
    .long mb2_info_request_end - mb2_info_request
    .long 1                 # boot command line
    .long 6                 # memory map
    .long 14                # ACPI old RSDP (ACPI 1.0)
    .long 15                # ACPI new RSDP (ACPI 2.0+)
mb2_info_request_end:

    # Framebuffer tag (spec 3.1.10): the screen console. Width, height and
    # depth 0 say "no preference" (GRUB picks its `auto` mode); flag bit 0
    # (spec 3.1.3: optional) lets GRUB boot us anyway, in EGA text mode
    # (framebuffer type 2) or with no framebuffer at all.
    .balign 8
mb2_framebuffer:
    .short 5, MB2_TAG_OPTIONAL
    .long mb2_framebuffer_end - mb2_framebuffer
    .long 0                 # width
    .long 0                 # height
    .long 0                 # depth
mb2_framebuffer_end:

    .balign 8
    .short 0, 0             # end tag
    .long 8
mb2_header_end:

# ------------------------------------------------------------------------
.section .text.boot, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov     %eax, %esi
    rdtsc                                   # the kernel's entry, for `bench: vmx-root`
    mov     %eax, boot_entry_tsc
    mov     %edx, boot_entry_tsc + 4
    # coreboot's cdecl argument, before the stack moves; only read where ESP
    # can point at a stack (a multiboot2 loader leaves it undefined).
    xor     %ebp, %ebp
    cmp     $0x1000, %esp
    jb      1f
    cmp     $0xfffffff0, %esp
    ja      1f
    mov     4(%esp), %ebp
1:  mov     $boot_stack_top, %esp

    # Zero .bss (page tables, stack, log ring, statics) before anything uses
    # it; the linker script aligns both ends to 4 KiB.
    mov     $__bss_start, %edi
    mov     $__bss_end, %ecx
    sub     %edi, %ecx
    shr     $2, %ecx
    xor     %eax, %eax
    rep stosl
    mov     %esi, %eax

    call    com1_init32
    mov     %eax, boot_entry_eax
    mov     %ebx, boot_info_phys
    mov     %ebp, boot_entry_arg

    # Long mode present? CPUID.80000001H:EDX[29] (SDM Vol. 2A "CPUID—CPU
    # Identification").
    mov     $0x80000000, %eax
    cpuid
    cmp     $0x80000001, %eax
    jb      .Lno_long_mode
    mov     $0x80000001, %eax
    cpuid
    bt      $29, %edx
    jnc     .Lno_long_mode

    # Identity-map the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT,
    # PDPT[0..3] -> PD0..PD3, PDn[i] -> n GiB + i * 2 MiB (SDM Vol. 3A §4.5
    # "4-Level Paging and 5-Level Paging").
    mov     $boot_pdpt, %eax
    or      $0x3, %eax                      # present | writable
    mov     %eax, boot_pml4
    mov     $boot_pd, %eax
    or      $0x3, %eax
    xor     %ecx, %ecx
1:  mov     %eax, boot_pdpt(, %ecx, 8)
    add     $0x1000, %eax
    inc     %ecx
    cmp     $4, %ecx
    jb      1b
    mov     $0x83, %eax                     # present | writable | 2 MiB page
    xor     %edx, %edx                      # bits 32+ of the physical address
    xor     %ecx, %ecx
2:  mov     %eax, boot_pd(, %ecx, 8)
    mov     %edx, boot_pd + 4(, %ecx, 8)
    add     $0x200000, %eax
    adc     $0, %edx
    inc     %ecx
    cmp     $2048, %ecx
    jb      2b

    ENABLE_PAGING_IA32E $boot_pml4        # asm/paging_ia32e.s
    lgdt    boot_gdt_ptr
    ljmp    $0x08, $long_mode_entry

.Lno_long_mode:
    mov     $msg_no_long_mode, %esi
    call    com1_puts32
3:  cli
    hlt
    jmp     3b

# COM1 at 115200 8N1, FIFO on, no interrupts (16550 data sheet).
com1_init32:
    push    %eax
    push    %edx
    mov     $(COM1 + 1), %dx;  xor %al, %al;  out %al, %dx   # IER = 0
    mov     $(COM1 + 3), %dx;  mov $0x80, %al; out %al, %dx  # DLAB
    mov     $(COM1 + 0), %dx;  mov $1, %al;    out %al, %dx  # divisor 1
    mov     $(COM1 + 1), %dx;  xor %al, %al;   out %al, %dx
    mov     $(COM1 + 3), %dx;  mov $0x03, %al; out %al, %dx  # 8N1
    mov     $(COM1 + 2), %dx;  mov $0xc7, %al; out %al, %dx  # FIFO
    mov     $(COM1 + 4), %dx;  mov $0x0b, %al; out %al, %dx  # DTR RTS OUT2
    pop     %edx
    pop     %eax
    ret

# Print the NUL-terminated string at ESI, polling LSR.THRE before each byte.
com1_puts32:
    mov     $(COM1 + 5), %dx
4:  in      %dx, %al
    test    $0x20, %al
    jz      4b
    lodsb
    test    %al, %al
    jz      5f
    mov     $COM1, %dx
    out     %al, %dx
    jmp     com1_puts32
5:  ret

.code64
long_mode_entry:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    xor     %eax, %eax
    mov     %ax, %fs
    mov     %ax, %gs
    mov     $boot_stack_top, %rsp
    mov     boot_entry_eax(%rip), %edi      # kernel_main(eax, ebx, arg): each
    mov     boot_info_phys(%rip), %esi      # zero-extends into its 64-bit register
    mov     boot_entry_arg(%rip), %edx
    xor     %ebp, %ebp
    call    kernel_main
6:  cli
    hlt
    jmp     6b

# ------------------------------------------------------------------------
.section .rodata.boot, "a"
msg_no_long_mode:
    .asciz "FATAL: this CPU has no long mode (CPUID.80000001H:EDX[29]=0); halting.\r\n"

# The boot GDT. The AP trampoline uses it too (selector 0x18 for its 32-bit
# step). Per-CPU GDTs later keep 0x08/0x10 for code and data.
.balign 16
.global BOOT_GDT
BOOT_GDT:
    .quad 0                          # 0x00 null
    .quad 0x00af9a000000ffff         # 0x08 64-bit code, DPL 0
    .quad 0x00cf92000000ffff         # 0x10 data, 4 GiB, DPL 0
    .quad 0x00cf9a000000ffff         # 0x18 32-bit code, 4 GiB, DPL 0
BOOT_GDT_END:
.balign 8
boot_gdt_ptr:
    .short BOOT_GDT_END - BOOT_GDT - 1
    .quad BOOT_GDT

# Outside .bss, which is zeroed after the TSC is read.
.section .data.boot, "aw"
.balign 8
.global boot_entry_tsc
boot_entry_tsc:
    .quad 0

# ------------------------------------------------------------------------
.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:  .skip 4096
.global boot_pdpt
boot_pdpt:  .skip 4096
boot_pd:    .skip 4096 * 4
.global boot_stack_bottom
boot_stack_bottom:
    .skip 64 * 1024
boot_stack_top:
boot_info_phys:
    .long 0
boot_entry_eax:
    .long 0
boot_entry_arg:
    .long 0

.purgem ENABLE_PAGING_IA32E
