# The 15 general registers but RSP, in struct GuestRegs order (RAX lowest):
# pushed to save a guest's registers into a vCPU, popped to load them back.
# Included by vmx/entry.s and svm/entry.s, each purging the macros after use
# (both end up in one assembly unit).

.macro SAVE_GUEST_GPRS
    push    %r15
    push    %r14
    push    %r13
    push    %r12
    push    %r11
    push    %r10
    push    %r9
    push    %r8
    push    %rdi
    push    %rsi
    push    %rbp
    push    %rbx
    push    %rdx
    push    %rcx
    push    %rax
.endm

.macro LOAD_GUEST_GPRS
    pop     %rax
    pop     %rcx
    pop     %rdx
    pop     %rbx
    pop     %rbp
    pop     %rsi
    pop     %rdi
    pop     %r8
    pop     %r9
    pop     %r10
    pop     %r11
    pop     %r12
    pop     %r13
    pop     %r14
    pop     %r15
.endm
