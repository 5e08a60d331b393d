# The 32 exception vectors: each stub pushes a dummy error code where the CPU
# pushes none (SDM Vol. 3A §6.13 "Error Code"), then its vector, and joins the
# common path, which saves the general registers and calls Rust
# `exception_dispatch`. That reports and ends the run, except for an NMI meant
# for the OS guest, which it only records: then it returns, and the stub
# restores and IRETs.

.macro EXC_NOERR v
exc_stub_\v:
    push    $0
    push    $\v
    jmp     exception_common
.endm
.macro EXC_ERR v
exc_stub_\v:
    push    $\v
    jmp     exception_common
.endm

.section .text.exceptions, "ax"
.code64
EXC_NOERR 0
EXC_NOERR 1
EXC_NOERR 2
EXC_NOERR 3
EXC_NOERR 4
EXC_NOERR 5
EXC_NOERR 6
EXC_NOERR 7
EXC_ERR   8
EXC_NOERR 9
EXC_ERR   10
EXC_ERR   11
EXC_ERR   12
EXC_ERR   13
EXC_ERR   14
EXC_NOERR 15
EXC_NOERR 16
EXC_ERR   17
EXC_NOERR 18
EXC_NOERR 19
EXC_NOERR 20
EXC_ERR   21
EXC_NOERR 22
EXC_NOERR 23
EXC_NOERR 24
EXC_NOERR 25
EXC_NOERR 26
EXC_NOERR 27
EXC_NOERR 28
EXC_ERR   29
EXC_ERR   30
EXC_NOERR 31

exception_common:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %rbp
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi              # &ExceptionFrame; RSP is 16-byte aligned here
    cld
    call    exception_dispatch      # returns only for an NMI it set aside or an MSR probe's #GP
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rbp
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    add     $16, %rsp               # vector and error code
    iretq

# The wake-up IPI (WAKE_VECTOR): an idle AP halts with interrupts on and this
# interrupt ends the HLT. The stub saves the registers the C ABI may clobber,
# writes EOI (Rust `wake_interrupt`) and returns. Entry leaves RSP 8 mod 16
# after the 5-word frame; nine pushes make it 16-aligned for the call.
.global wake_stub
wake_stub:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    cld
    call    wake_interrupt
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq

# The APIC's spurious vector (SVR = 0xff): no EOI (SDM Vol. 3A §11.9 "Spurious
# Interrupt").
.global spurious_stub
spurious_stub:
    iretq

.section .rodata.exceptions, "a"
.balign 8
.global EXCEPTION_STUBS
EXCEPTION_STUBS:
    .quad exc_stub_0,  exc_stub_1,  exc_stub_2,  exc_stub_3
    .quad exc_stub_4,  exc_stub_5,  exc_stub_6,  exc_stub_7
    .quad exc_stub_8,  exc_stub_9,  exc_stub_10, exc_stub_11
    .quad exc_stub_12, exc_stub_13, exc_stub_14, exc_stub_15
    .quad exc_stub_16, exc_stub_17, exc_stub_18, exc_stub_19
    .quad exc_stub_20, exc_stub_21, exc_stub_22, exc_stub_23
    .quad exc_stub_24, exc_stub_25, exc_stub_26, exc_stub_27
    .quad exc_stub_28, exc_stub_29, exc_stub_30, exc_stub_31
