# VMRUN and the #VMEXIT path.
#
# svm_run(vcpu) runs the guest until its exit handler says stop. Around each
# VMRUN: CLGI (interrupts, NMIs, SMIs and INIT held pending from here to the
# next VMRUN, which sets GIF), VMLOAD of the guest's FS, GS, TR, LDTR and
# system-call MSRs (VMRUN loads only the rest), the guest's RAX into the VMCB,
# its other registers from vcpu->regs, STI (the host's RFLAGS.IF, which VMRUN
# saves, is what masks physical interrupts while a guest with V_INTR_MASKING
# runs: set, an interrupt the VMCB intercepts ends the guest's turn), VMRUN.
# #VMEXIT leaves GIF 0 and restores the host's RAX (the VMCB's address), RSP
# and RFLAGS; the guest's other registers are still in the registers: they
# go into vcpu->regs (RAX from the VMCB), VMSAVE stores the guest's FS, GS and
# the rest into its VMCB and VMLOAD brings back the host's (GS base: the PCB),
# and the vCPU's `dispatch` handler runs on the exit stack, GIF still 0, so
# nothing interrupts it. When it says stop, STGI, and svm_run returns its code.
#
# The VMCB is identity-mapped heap memory: its physical address is its address.

.section .text.svm, "ax"
.code64


# u64 svm_run(struct Vcpu *vcpu [rdi])
.global svm_run
svm_run:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, {HOST_RSP_SAVE}(%rdi)
    mov     %rdi, %rsp                      # RSP = &vcpu->regs

svm_enter:                                  # RSP = &vcpu->regs
    mov     {VMCB_PA}(%rsp), %rax
    mov     {REG_RAX}(%rsp), %rcx
    mov     %rcx, {SAVE_RAX}(%rax)          # the guest's RAX lives in the VMCB
    clgi
    vmload  %rax
    LOAD_GUEST_GPRS                     # RSP = the end of vcpu->regs
    mov     {VMCB_PA}-{REGS_SIZE}(%rsp), %rax
    sti
1:  vmrun   %rax
.global svm_vmexit_first
svm_vmexit_first:                           # the host's first instruction after #VMEXIT

    # #VMEXIT. A flush TLB_CONTROL asked for is done: every later VMRUN of
    # this VMCB, the fast path's included, does nothing to the TLB (APM Vol.
    # 2 §15.16.2 "TLB Flush").
    movb    $0, {TLB_CONTROL}(%rax)
    # The CPUID fast path, for a vCPU that turned it on (a counter
    # address in vcpu->fast_cpuid; only where the CPU saves the next RIP): a
    # CPUID exit for a leaf that reaches the guest as the CPU answers it
    # (hvlogic::os_guest::passes_through, same comparisons, same order), with
    # neither RFLAGS.TF nor RFLAGS.RF set, no interrupt shadow to end, and no
    # 4 GiB boundary crossed by RIP, and fewer exits so far than
    # vcpu->fast_until (a handler's exit budget), is answered here: CPUID runs with the
    # guest's EAX (from the VMCB) and ECX, RIP becomes the saved next RIP, and
    # the guest runs again, its FS, GS and the rest still loaded. RBX, RDX and
    # RSI are the scratch registers, saved first so every other exit finds the
    # guest's. Everything else goes on to the dispatcher.
    mov     %rbx, {REG_RBX}-{REGS_SIZE}(%rsp)
    mov     %rdx, {REG_RDX}-{REGS_SIZE}(%rsp)
    mov     {FAST_CPUID}-{REGS_SIZE}(%rsp), %rdx
    test    %rdx, %rdx
    jz      3f
    cmpq    ${EXITCODE_CPUID}, {EXITCODE}(%rax)
    jne     3f
    mov     {SAVE_RAX}(%rax), %rbx          # the leaf
    cmp     $0x1, %ebx
    je      3f
    cmp     $0x7, %ebx
    je      3f
    cmp     $0xd, %ebx
    je      3f
    cmp     $0x40000000, %ebx
    jb      4f
    cmp     $0x80000001, %ebx
    je      3f
    cmp     $0x8000000a, %ebx
    je      3f
    cmp     $0x50000000, %ebx
    jb      3f                              # the hypervisor's own leaves
4:  mov     {EXITS}-{REGS_SIZE}(%rsp), %rdx
    cmp     {FAST_UNTIL}-{REGS_SIZE}(%rsp), %rdx
    jae     3f                              # a budget of exits: the dispatcher's
    testl   $0x10100, {SAVE_RFLAGS}(%rax)   # RF, TF
    jnz     3f
    testb   $1, {INTERRUPT_SHADOW}(%rax)
    jnz     3f
    mov     {NRIP}(%rax), %rbx
    mov     {SAVE_RIP}(%rax), %rdx
    xor     %rbx, %rdx
    shr     $32, %rdx                       # crossing a 4 GiB boundary: the dispatcher
    jnz     3f                              # knows whether EIP wraps
    mov     %rbx, {SAVE_RIP}(%rax)
    mov     {FAST_CPUID}-{REGS_SIZE}(%rsp), %rdx
    incl    (%rdx)                          # this vCPU's count of CPUID exits
    incq    {EXITS}-{REGS_SIZE}(%rsp)
    mov     %rsi, {REG_RSI}-{REGS_SIZE}(%rsp)
    mov     %rax, %rsi                      # the VMCB, across CPUID
    mov     {SAVE_RAX}(%rsi), %eax
    cpuid
    mov     %rax, {SAVE_RAX}(%rsi)          # EAX zero-extended, as CPUID leaves RAX
    mov     %rsi, %rax
    mov     {REG_RSI}-{REGS_SIZE}(%rsp), %rsi
    jmp     1b

3:  mov     {REG_RBX}-{REGS_SIZE}(%rsp), %rbx
    mov     {REG_RDX}-{REGS_SIZE}(%rsp), %rdx
    cli
    vmsave  %rax                            # the guest's FS, GS, TR, LDTR, ... into its VMCB
    SAVE_GUEST_GPRS                     # RSP = &vcpu->regs
    mov     {SAVE_RAX}(%rax), %rcx
    mov     %rcx, {REG_RAX}(%rsp)           # the guest's RAX, from the VMCB
    mov     {HOST_STATE_PA}(%rsp), %rax
    vmload  %rax                            # the host's FS, GS (the PCB), TR, LDTR, ...
.global svm_vmexit_host_loaded
svm_vmexit_host_loaded:
    mov     %rsp, %rbx                      # RBX = vcpu (regs is its first field)
    mov     {EXIT_STACK_TOP}(%rbx), %rsp
    mov     %rbx, %rdi
    call    *{DISPATCH}(%rbx)               # 0: resume the guest; else stop with that code
    mov     %rbx, %rsp
    test    %rax, %rax
    jz      svm_enter
    stgi
    mov     {HOST_RSP_SAVE}(%rbx), %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

.purgem SAVE_GUEST_GPRS
.purgem LOAD_GUEST_GPRS
