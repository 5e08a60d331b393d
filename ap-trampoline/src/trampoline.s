# AP start-up code. The SIPI starts the AP in real mode at CS:IP = VV00:0000,
# where VV is the page number of the copy (SDM Vol. 3A 9.4.4, 11.6.1). Nothing
# here depends on where the page is: addresses are taken from CS at run time.
# The image lives in .rodata; only its copy below 1 MiB is ever executed. The
# far jumps are far returns, on a small stack at the top of the page.

.section .rodata.ap_trampoline, "a"
.balign 16
.global ap_trampoline_start
.global ap_trampoline_params
.global ap_trampoline_end

.code16
ap_trampoline_start:
    cli
    cld
    mov     %cs, %ax
    mov     %ax, %ds
    mov     %ax, %ss
    mov     $0x1000, %sp                # a few bytes of stack at the top of the page
    xor     %ebx, %ebx
    mov     %cs, %bx
    shl     $4, %ebx                    # EBX = linear address of this page

    lgdtl   (ap_trampoline_params - ap_trampoline_start + {GDTR})
    # The far return to 32-bit code (selector 0x18, offset EBX + pm32) is
    # prepared first, so it directly follows the MOV to CR0 (SDM Vol. 3A 10.9.1).
    lea     (ap_pm32 - ap_trampoline_start)(%ebx), %eax
    pushl   $0x18
    pushl   %eax
    mov     %cr0, %eax
    or      $1, %eax                    # CR0.PE
    mov     %eax, %cr0
    lretl

.code32
ap_pm32:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    lea     0x1000(%ebx), %esp          # the same stack, now flat

    ENABLE_PAGING_IA32E (ap_trampoline_params - ap_trampoline_start + {CR3})(%ebx)   # asm/paging_ia32e.s

    lea     (ap_lm64 - ap_trampoline_start)(%ebx), %eax
    push    $0x08
    push    %eax
    lret

.code64
ap_lm64:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    xor     %eax, %eax
    mov     %ax, %fs
    mov     %ax, %gs
    mov     %ebx, %ebx                  # zero-extend the page address
    mov     (ap_trampoline_params - ap_trampoline_start + {STACK_TOP})(%rbx), %rsp
    mov     (ap_trampoline_params - ap_trampoline_start + {ARG})(%rbx), %rdi
    mov     (ap_trampoline_params - ap_trampoline_start + {CPU_INDEX})(%rbx), %rsi
    mov     (ap_trampoline_params - ap_trampoline_start + {ENTRY})(%rbx), %rax
    xor     %ebp, %ebp
    call    *%rax                       # never returns
1:  cli
    hlt
    jmp     1b

.balign 8
ap_trampoline_params:
    .skip   {PARAMS_SIZE}
ap_trampoline_end:

.purgem ENABLE_PAGING_IA32E
