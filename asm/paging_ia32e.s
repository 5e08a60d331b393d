# Shared by the boot CPU's entry (kernel/src/boot.s) and the AP trampoline
# (ap-trampoline/src/trampoline.s): from 32-bit protected mode into IA-32e
# mode (SDM Vol. 3A §10.8.5 "Initializing IA-32e Mode"): CR4.PAE, CR3 = the
# PML4 given as `pml4` (any 32-bit source operand), IA32_EFER.LME, then CR0.PG
# and CR0.WP. CR0.CD and CR0.NW are cleared on the way: reset and INIT leave
# them set (CR0 = 0x60000010), and the CPU would otherwise run uncached (SDM
# Vol. 3A §12.5.1 "Cache Control Registers and Bits").
# Clobbers EAX, ECX, EDX. The caller's far jump to a 64-bit code segment follows.
.macro ENABLE_PAGING_IA32E pml4
    mov     %cr4, %eax
    or      $(1 << 5), %eax
    mov     %eax, %cr4
    mov     \pml4, %eax
    mov     %eax, %cr3
    mov     $0xc0000080, %ecx
    rdmsr
    or      $(1 << 8), %eax
    wrmsr
    mov     %cr0, %eax
    or      $((1 << 31) | (1 << 16) | 1), %eax
    and     $~((1 << 30) | (1 << 29)), %eax
    mov     %eax, %cr0
.endm
