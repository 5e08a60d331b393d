# The guest: a small program every processor runs as a guest, under VMX or SVM.
#
# Its calls to the hypervisor go through `hypercall` (VMCALL on Intel, which
# the hypervisor patches to VMMCALL on AMD when it copies the image: both are
# three bytes, as KVM patches them for its guests).
#
# With unrestricted guest it starts like a CPU out of reset, in real mode at
# F000:FFF0; the reset vector jumps to guest_real_entry at {IMAGE}, which
# switches to 32-bit protected mode itself. Without unrestricted guest the
# hypervisor starts it at guest_pm_entry, already in protected mode with
# paging. Either way the 32-bit part reads the parameter block at {PARAMS}
# and runs the normal, hostile or bench program. The image is copied to
# guest address {IMAGE}; every absolute address below is `label - GBASE`.

.section .rodata.guest, "a"
.balign 16
.global guest_image_start
.global guest_image_end
.global guest_pm_entry_offset

.set GBASE, guest_image_start - {IMAGE}
.set COM1_DATA, 0x3f8
.set COM1_LSR, 0x3fd

.code16
guest_image_start:
guest_real_entry:
    cli
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %ss
    mov     ${STACK_TOP}, %sp
    lgdtl   (guest_gdtr - GBASE)
    mov     %cr0, %eax
    or      $1, %eax                        # CR0.PE
    mov     %eax, %cr0
    ljmpl   ${GUEST_CS}, $(guest_pm_entry - GBASE)

.code32
guest_pm_entry:
    mov     ${GUEST_DS}, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %ax, %fs
    mov     %ax, %gs
    mov     ${STACK_TOP}, %esp
    mov     ({PARAMS} + {P_KIND}), %eax
    cmp     ${KIND_NORMAL}, %eax
    je      normal
    cmp     ${KIND_HOSTILE}, %eax
    je      hostile
    cmp     ${KIND_BENCH}, %eax
    je      bench
    mov     $90, %ebx                       # unknown kind
    jmp     fail

# --- normal: CPUID, a line on COM1, MSRs through the bitmap, VMCALL ------
normal:
    mov     $1, %eax
    xor     %ecx, %ecx
    cpuid
    mov     $1, %ebx
    test    $(1 << 5), %ecx                 # VMX must be hidden
    jnz     fail
    mov     $2, %ebx
    bt      $31, %ecx                       # "hypervisor present"
    jnc     fail
    mov     ${CPUID_HV_CPU_INDEX}, %eax
    cpuid
    mov     %eax, %edi                      # this CPU's processor index

    mov     $(msg_hello - GBASE), %esi
    call    puts
    mov     %edi, %eax
    call    putdec
    mov     $(msg_newline - GBASE), %esi
    call    puts

    mov     ({PARAMS} + {P_MSR}), %ecx      # IA32_FEATURE_CONTROL or VM_CR: exits
    rdmsr
    mov     $3, %ebx
    cmp     ({PARAMS} + {P_MSR_VALUE}), %eax # answered "locked, off"
    jne     fail
    test    %edx, %edx
    jnz     fail
    mov     ${PASS_THROUGH_MSR}, %ecx       # IA32_APIC_BASE: passes through (bitmap bit clear)
    rdmsr
    mov     %eax, %esi
    mov     %edx, %edi
    rdmsr
    mov     $4, %ebx
    cmp     %esi, %eax
    jne     fail                            # two reads differ
    cmp     %edi, %edx
    jne     fail
    test    $0x800, %eax                    # or the APIC reads disabled (bit 11)
    jz      fail

    mov     ${HC_DONE}, %eax
    xor     %ebx, %ebx
    call    hypercall
    hlt

# EBX = failure code.
fail:
    mov     ${HC_DONE}, %eax
    call    hypercall
    hlt

# The one place the guest calls the hypervisor: EAX = function, EBX/ECX/EDX
# arguments, EAX = result. The three bytes at guest_hypercall_insn are VMCALL
# (0F 01 C1) as assembled, VMMCALL (0F 01 D9) once patched for SVM.
hypercall:
.global guest_hypercall_insn
guest_hypercall_insn:
    vmcall
    ret

# --- bench: {BENCH_ITERATIONS} CPUID exits, each timed with RDTSC, for leaf
# 0 (passed through as the CPU answers it) and leaf 1 (adjusted by the host);
# each set reported with VMCALL report-samples(samples, count, leaf) -------------
bench:
    xor     %edx, %edx
    call    bench_leaf
    mov     $1, %edx
    call    bench_leaf
    mov     ${HC_DONE}, %eax
    xor     %ebx, %ebx
    call    hypercall
    hlt

# EDX = the leaf. Returns only if the host took the samples.
bench_leaf:
    push    %edx                            # the leaf, at (%esp) during the loop
    mov     ${SAMPLES}, %edi
    mov     ${BENCH_ITERATIONS}, %ebp
1:  rdtsc
    mov     %eax, %esi
    mov     (%esp), %eax                    # (leaves 0 and 1 take no subleaf)
    cpuid
    rdtsc
    sub     %esi, %eax
    mov     %eax, (%edi)
    add     $4, %edi
    dec     %ebp
    jnz     1b
    pop     %edx
    mov     ${HC_REPORT_SAMPLES}, %eax
    mov     ${SAMPLES}, %ebx
    mov     ${BENCH_ITERATIONS}, %ecx
    call    hypercall
    test    %eax, %eax
    jnz     2f
    ret
2:  mov     $5, %ebx
    jmp     fail

# --- hostile: one attempt per launch; reaching `escaped` means it was not contained
hostile:
    mov     ({PARAMS} + {P_STEP}), %eax
    cmp     ${STEP_READ_OUTSIDE}, %eax
    je      h_read
    cmp     ${STEP_WRITE_OUTSIDE}, %eax
    je      h_write
    cmp     ${STEP_VMXON}, %eax
    je      h_vmxon
    cmp     ${STEP_BAD_VMCALL}, %eax
    je      h_vmcall
    cmp     ${STEP_GARBAGE_CR3}, %eax
    je      h_cr3
    cmp     ${STEP_TRIPLE_FAULT}, %eax
    je      h_triple
    cmp     ${STEP_NEVER_ENDS}, %eax
    je      h_spin
    cmp     ${STEP_VMRUN}, %eax
    je      h_vmrun
    cmp     ${STEP_VMLOAD}, %eax
    je      h_vmload
    cmp     ${STEP_VMSAVE}, %eax
    je      h_vmsave
    cmp     ${STEP_STGI}, %eax
    je      h_stgi
    cmp     ${STEP_CLGI}, %eax
    je      h_clgi
    cmp     ${STEP_SKINIT}, %eax
    je      h_skinit
    cmp     ${STEP_EFER_SVME}, %eax
    je      h_svme
    cmp     ${STEP_HSAVE_PA}, %eax
    je      h_hsave
    cmp     ${STEP_VM_CR}, %eax
    je      h_vmcr
    mov     $91, %ebx
    jmp     fail
h_read:
    mov     0x40000000, %eax                # 1 GiB: outside guest memory
    jmp     escaped
h_write:
    movl    $0xdeadbeef, 0x200000           # where the hypervisor lives in host memory
    jmp     escaped
h_vmxon:
    vmxon   ({STACK_TOP})
    jmp     escaped
h_vmcall:
    mov     $0xdeadbeef, %eax               # no such function
    call    hypercall
    cmp     ${HC_REFUSED_32}, %eax
    jne     escaped
    mov     ${HC_REPORT_SAMPLES}, %eax      # samples "outside guest memory", too many
    mov     $0xfffff000, %ebx
    mov     $0x1000000, %ecx
    call    hypercall
    cmp     ${HC_REFUSED_32}, %eax
    jne     escaped
    mov     ${HC_DONE}, %eax
    xor     %ebx, %ebx
    call    hypercall
    hlt
h_cr3:
    mov     $0xdeadb000, %eax
    mov     %eax, %cr3
    mov     %cr0, %eax
    or      $0x80000000, %eax               # CR0.PG: walk the garbage tables
    mov     %eax, %cr0
    jmp     escaped
h_triple:
    lidt    (zero_idtr - GBASE)
    int3
    jmp     escaped
h_spin:
    jmp     h_spin
# SVM's instructions (each must raise #UD: SVM is hidden) and MSRs (#GP).
h_vmrun:
    xor     %eax, %eax
    vmrun
    jmp     escaped
h_vmload:
    xor     %eax, %eax
    vmload
    jmp     escaped
h_vmsave:
    xor     %eax, %eax
    vmsave
    jmp     escaped
h_stgi:
    stgi
    jmp     escaped
h_clgi:
    clgi
    jmp     escaped
h_skinit:
    xor     %eax, %eax
    skinit
    jmp     escaped
h_svme:
    mov     $0xc0000080, %ecx               # EFER
    rdmsr
    or      $0x1000, %eax                   # SVME
    wrmsr
    jmp     escaped
h_hsave:
    mov     ${VM_HSAVE_PA}, %ecx
    rdmsr
    jmp     escaped
h_vmcr:
    mov     ${VM_CR}, %ecx                  # must read "SVM disabled, locked"
    rdmsr
    cmp     ${VM_CR_GUEST_VIEW}, %eax
    jne     escaped
    test    %edx, %edx
    jnz     escaped
    mov     ${HC_DONE}, %eax
    xor     %ebx, %ebx
    call    hypercall
    hlt
escaped:
    mov     ${HC_DONE}, %eax
    mov     $100, %ebx
    add     ({PARAMS} + {P_STEP}), %ebx
    call    hypercall
    hlt

# --- COM1, as a program on a PC would drive it ----------------------------
# puts: ESI = NUL-terminated string. Polls LSR.THRE (bit 5) before each byte.
puts:
    lodsb
    test    %al, %al
    jz      3f
    mov     %al, %cl
2:  mov     $COM1_LSR, %dx
    in      %dx, %al
    test    $0x20, %al
    jz      2b
    mov     $COM1_DATA, %dx
    mov     %cl, %al
    out     %al, %dx
    jmp     puts
3:  ret

# putdec: EAX = number, printed in decimal.
putdec:
    mov     %esp, %ebp
    sub     $16, %esp
    mov     %ebp, %esi
    dec     %esi
    movb    $0, (%esi)
    mov     $10, %ecx
4:  xor     %edx, %edx
    div     %ecx
    add     $'0', %dl
    dec     %esi
    mov     %dl, (%esi)
    test    %eax, %eax
    jnz     4b
    call    puts
    mov     %ebp, %esp
    ret

.balign 8
guest_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                # 0x08: 32-bit code, 4 GiB
    .quad 0x00cf92000000ffff                # 0x10: data, 4 GiB
guest_gdt_end:
guest_gdtr:
    .short guest_gdt_end - guest_gdt - 1
    .long guest_gdt - GBASE
zero_idtr:
    .short 0
    .long 0
msg_hello:
    .asciz "hello from guest on cpu "
msg_newline:
    .asciz "\n"
guest_image_end:

.balign 4
guest_pm_entry_offset:
    .long guest_pm_entry - guest_image_start
guest_gdt_offset:
    .long guest_gdt - guest_image_start
.global guest_gdt_offset
guest_hypercall_offset:
    .long guest_hypercall_insn - guest_image_start
.global guest_hypercall_offset
.code64                                     # back to the mode every other asm block expects
