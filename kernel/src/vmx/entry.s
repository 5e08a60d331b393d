# VM entry and the VM-exit path.
#
# vm_run(vcpu, launched) loads the guest's general registers from vcpu->regs
# and executes VMLAUNCH (or VMRESUME). Every VM exit lands in vm_exit_stub
# with RSP = HOST_RSP = the end of vcpu->regs, so the 15 pushes store the
# guest's registers straight into vcpu->regs; the Rust handler then runs on
# this CPU's exit stack: the vCPU's `dispatch` handler, called with the vCPU.
# Nothing else is saved: the kernel never touches
# x87/SSE state (x86_64-unknown-none is a soft-float target), and the guest's
# RSP, RIP and RFLAGS live in the VMCS. When the dispatcher says stop,
# vm_run returns to its caller with the dispatcher's code.

.section .text.vmx, "ax"
.code64


# u64 vm_run(struct Vcpu *vcpu [rdi], u64 launched [rsi])
.global vm_run
vm_run:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, {HOST_RSP_SAVE}(%rdi)
    test    %rsi, %rsi                      # flags survive the pops below
    mov     %rdi, %rsp
    LOAD_GUEST_GPRS
    jnz     1f
    vmlaunch
    jmp     vm_entry_failed
1:  vmresume
    # Falls through only when VM entry failed with VMfailInvalid/VMfailValid.

vm_entry_failed:
    lea     -{REGS_SIZE}(%rsp), %rbx        # RSP is the end of vcpu->regs here
    mov     {HOST_RSP_SAVE}(%rbx), %rsp
    pushfq
    pop     %rax
    and     $0x41, %eax                     # CF | ZF: which VMfail it was
    bts     $63, %rax                       # mark: entry failed
    jmp     vm_return

.global vm_exit_stub
vm_exit_stub:
    # The CPUID fast path, for a vCPU that turned it on (a counter address in
    # vcpu->fast_cpuid): a CPUID exit for a leaf that reaches the guest as the
    # CPU answers it (hvlogic::os_guest::passes_through, same comparisons, same
    # order), with neither RFLAGS.TF (a single-step trap is due) nor RFLAGS.RF
    # (CPUID's completion clears it) set, no blocking by STI, MOV SS or SMI to
    # end or clear, and no 4 GiB boundary crossed by RIP, is answered here:
    # CPUID runs with the guest's own EAX and ECX and leaves its answer in the
    # guest's registers, RIP steps over the instruction, and the guest resumes.
    # RBX and RDX are the scratch registers, saved first so every other exit
    # finds the guest's.
    # Everything else goes on to the dispatcher, which handles CPUID the same way.
    mov     %rbx, {REG_RBX}-{REGS_SIZE}(%rsp)
    mov     %rdx, {REG_RDX}-{REGS_SIZE}(%rsp)
    mov     {FAST_CPUID}-{REGS_SIZE}(%rsp), %rdx
    test    %rdx, %rdx
    jz      3f
    mov     ${EXIT_REASON}, %ebx
    vmread  %rbx, %rbx
    cmp     ${BASIC_CPUID}, %ebx            # a CPUID exit, not a failed VM entry
    jne     3f
    cmp     $0x1, %eax
    je      3f
    cmp     $0x7, %eax
    je      3f
    cmp     $0xd, %eax
    je      3f
    cmp     $0x40000000, %eax
    jb      4f
    cmp     $0x80000001, %eax
    je      3f
    cmp     $0x8000000a, %eax
    je      3f
    cmp     $0x50000000, %eax
    jb      3f                              # the hypervisor's own leaves
4:  mov     ${GUEST_RFLAGS}, %ebx
    vmread  %rbx, %rbx
    test    $0x10100, %ebx                  # RF, TF
    jnz     3f
    mov     ${GUEST_INTERRUPTIBILITY}, %ebx
    vmread  %rbx, %rbx
    test    $0x7, %ebx                      # blocking by STI, MOV SS, SMI
    jnz     3f
    mov     ${GUEST_RIP}, %ebx
    vmread  %rbx, %rdx
    mov     ${EXIT_INSTRUCTION_LEN}, %ebx
    vmread  %rbx, %rbx
    add     %rdx, %rbx                      # RBX = the next RIP
    xor     %rbx, %rdx
    shr     $32, %rdx                       # crossing a 4 GiB boundary: the dispatcher
    jnz     3f                              # knows whether EIP wraps (emulate::advance)
    mov     ${GUEST_RIP}, %edx
    vmwrite %rbx, %rdx
    mov     {FAST_CPUID}-{REGS_SIZE}(%rsp), %rdx
    incl    (%rdx)                          # this vCPU's count of CPUID exits
    incq    {EXITS}-{REGS_SIZE}(%rsp)
    cpuid
    vmresume
    SAVE_GUEST_GPRS                         # VM entry failed: the registers, for the report
    lea     {REGS_SIZE}(%rsp), %rsp         # (LEA and PUSH keep the VMfail flags)
    jmp     vm_entry_failed
3:  mov     {REG_RBX}-{REGS_SIZE}(%rsp), %rbx
    mov     {REG_RDX}-{REGS_SIZE}(%rsp), %rdx
    SAVE_GUEST_GPRS
    mov     %rsp, %rbx                      # RBX = vcpu (regs is its first field)
    mov     {EXIT_STACK_TOP}(%rbx), %rsp
    mov     %rbx, %rdi
    call    *{DISPATCH}(%rbx)               # 0: resume the guest; else stop with that code
    test    %rax, %rax
    jnz     2f
    mov     %rbx, %rsp
    LOAD_GUEST_GPRS
    vmresume
    jmp     vm_entry_failed
2:  mov     {HOST_RSP_SAVE}(%rbx), %rsp

vm_return:
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

.purgem SAVE_GUEST_GPRS
.purgem LOAD_GUEST_GPRS
