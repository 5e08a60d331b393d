# AP start-up code. A SIPI starts an AP in real mode at CS:IP = VV00:0000,
# where VV is the page number of the copy (SDM Vol. 3A §9.4.4 "MP
# Initialization Example", §11.6.1 "Interrupt Command Register (ICR)").
# Every AP of the run executes this copy at the same time: no stack, no lock,
# no write to the page; the far jumps go through pointers the boot CPU filled
# in. The image lives in .rodata; only its copy below 1 MiB is executed.

.section .rodata.ap_trampoline, "a"
.balign 16
.global ap_trampoline_start
.global ap_pm32
.global ap_lm64
.global ap_trampoline_params
.global ap_trampoline_end

.set P, ap_trampoline_params - ap_trampoline_start

.code16
ap_trampoline_start:
    cli
    cld
    mov     %cs, %ax
    mov     %ax, %ds
    xor     %ebx, %ebx
    mov     %cs, %bx
    shl     $4, %ebx                    # EBX = linear address of this page

    lgdtl   (P + {GDTR})
    mov     %cr0, %eax
    or      $1, %eax                    # CR0.PE
    mov     %eax, %cr0
    # A far JMP right after the MOV to CR0 (SDM Vol. 3A §10.9.1 "Switching to
    # Protected Mode"); DS still has its real-mode base, so the pointer is
    # read from this page.
    ljmpl   *(P + {TO_PM32})

.code32
ap_pm32:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss

    ENABLE_PAGING_IA32E (P + {CR3})(%ebx)   # asm/paging_ia32e.s
    ljmp    *(P + {TO_LM64})(%ebx)

.code64
ap_lm64:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    xor     %eax, %eax
    mov     %ax, %fs
    mov     %ax, %gs
    mov     %ebx, %r15d                 # R15 = this page (zero-extended)

    # This AP's APIC ID, as the MADT names it: the x2APIC ID MSR in x2APIC
    # mode, else the xAPIC ID register (SDM Vol. 3A §11.4.6 "Local APIC ID",
    # §11.12.5.1 "x2APIC States").
    xor     %r13d, %r13d                # 0: the APIC register is being tried
    mov     $0x1b, %ecx                 # IA32_APIC_BASE
    rdmsr
    test    $(1 << 10), %eax            # EXTD: x2APIC mode
    jnz     .Lx2apic
    test    $(1 << 11), %eax            # EN: xAPIC on
    jz      .Lcpuid
    test    %edx, %edx                  # registers above 4 GiB are not mapped here
    jnz     .Lcpuid
    and     $0xfffff000, %eax
    mov     0x20(%rax), %eax            # APIC ID register, ID in bits 31:24
    shr     $24, %eax
    jmp     .Llookup
.Lx2apic:
    mov     $0x802, %ecx                # IA32_X2APIC_APICID
    rdmsr
    jmp     .Llookup
    # The initial APIC ID from CPUID: leaf 0xB's x2APIC ID where the leaf
    # exists, else CPUID.01H:EBX[31:24].
.Lcpuid:
    mov     $1, %r13d
    xor     %eax, %eax
    cpuid
    cmp     $0xb, %eax
    jb      .Lleaf1
    mov     $0xb, %eax
    xor     %ecx, %ecx
    cpuid
    test    %ebx, %ebx
    jz      .Lleaf1
    mov     %edx, %eax
    jmp     .Llookup
.Lleaf1:
    mov     $1, %eax
    cpuid
    shr     $24, %ebx
    mov     %ebx, %eax

    # Find the slot with this APIC ID.
.Llookup:
    mov     %eax, %r14d
    mov     (P + {TABLE})(%r15), %rsi
    mov     (P + {COUNT})(%r15), %rcx
1:  test    %rcx, %rcx
    jz      .Lnot_found
    cmp     %r14d, {SLOT_APIC_ID}(%rsi)
    je      .Lfound
    add     ${SLOT_SIZE}, %rsi
    dec     %rcx
    jmp     1b
.Lnot_found:
    test    %r13d, %r13d
    jz      .Lcpuid                     # try the CPUID ID before giving up
2:  cli                                 # not an AP this run starts: stay out
    hlt
    jmp     2b

.Lfound:
    movl    $1, {SLOT_ARRIVED}(%rsi)    # the first sign of life
    mov     {SLOT_STACK_TOP}(%rsi), %rsp
    mov     {SLOT_PCB}(%rsi), %rdi
    mov     %r14d, %esi                 # the APIC ID read above
    mov     (P + {ENTRY})(%r15), %rax
    xor     %ebp, %ebp
    call    *%rax                       # never returns
3:  cli
    hlt
    jmp     3b

.balign 8
ap_trampoline_params:
    .skip   {PARAMS_SIZE}
ap_trampoline_end:

.purgem ENABLE_PAGING_IA32E
