# linux_enter_native(entry [edi], boot_params [esi], gdtr [rdx]): hand the
# machine to Linux without the hypervisor, at the 32-bit entry of the boot
# protocol (the kernel's Documentation/arch/x86/boot.rst, "32-bit Boot
# Protocol"): protected mode with paging off, a GDT with __BOOT_CS (0x10,
# flat 4 GiB code) and __BOOT_DS (0x18, flat 4 GiB data), CS/DS/ES/SS loaded
# from them, interrupts off, ESI = the zero page, EBP = EDI = EBX = 0.
#
# From 64-bit mode: load that GDT, far-return into its 32-bit code segment
# (compatibility mode), turn paging off, which leaves IA-32e mode (LMA = 0),
# clear IA32_EFER.LME (SDM Vol. 3A §10.8.5.4 "Switching Out of IA-32e Mode
# Operation"), load the data segments and jump. The code runs identity-mapped
# below 4 GiB (the kernel image), so turning paging off does not move it.

.section .text.linux_entry, "ax"
.code64
.global linux_enter_native
linux_enter_native:
    cli
    lgdt    (%rdx)
    pushq   $0x10
    lea     1f(%rip), %rax
    pushq   %rax
    lretq
.code32
1:  mov     $0x18, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %eax, %fs
    mov     %eax, %gs
    mov     %cr0, %eax
    and     $0x7fffffff, %eax               # CR0.PG = 0
    mov     %eax, %cr0
    mov     $0xc0000080, %ecx               # IA32_EFER.LME = 0 (clobbers EAX, EDX)
    rdmsr
    and     $~(1 << 8), %eax
    wrmsr
    mov     %cr4, %eax                      # CR4.PAE, PGE off: Linux sets its own
    and     $~((1 << 5) | (1 << 7)), %eax
    mov     %eax, %cr4
    mov     %edi, %eax
    xor     %ebx, %ebx
    xor     %ebp, %ebp
    xor     %edi, %edi
    jmp     *%eax
.code64
