# The exec shim of prefork's master socket mode, for x86-64 Linux: the
# source of the machine code in code_amd64.go (TestCodeMatchesSource
# assembles it with GNU as and compares). Position-independent, no data
# segment, system calls only.
#
#	shim __prefork_exec COMMAND [ARG...]
#
# sets the parent-death signal (SIGTERM), checks that its parent is the
# master whose pid PREFORK_SHIM_PARENT names, and execs COMMAND with the
# environment minus PREFORK_SHIM_PARENT plus LISTEN_PID=<its own pid>.
# Any failure: a line on stderr, exit status 127. With no argument at
# all it exits 0: the master's check that the shim runs here.

	.intel_syntax noprefix
	.text
	.globl	_start
_start:
	mov	rbx, [rsp]		# argc
	lea	r13, [rsp+8]		# argv
	lea	r14, [r13+rbx*8+8]	# envp
	cmp	rbx, 1
	je	probe
	cmp	rbx, 3
	jb	nocommand

	mov	eax, 157		# prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0)
	mov	edi, 1
	mov	esi, 15
	xor	edx, edx
	xor	r10d, r10d
	xor	r8d, r8d
	syscall
	test	rax, rax
	jnz	nopdeath

	xor	ecx, ecx		# rcx: how many environment variables
count:
	cmp	qword ptr [r14+rcx*8], 0
	je	counted
	inc	rcx
	jmp	count
counted:
	lea	rax, [rcx*8+16+64+15]	# room for rcx+2 pointers and two 32-byte buffers
	and	rax, -16
	sub	rsp, rax
	mov	r15, rsp		# r15: the parent's pid; r15+32: "LISTEN_PID=<pid>"
	lea	r12, [rsp+64]		# r12: the new environment

	mov	eax, 110		# getppid
	syscall
	mov	rdi, r15
	call	itoa

	xor	ebp, ebp		# ebp: 1 once PREFORK_SHIM_PARENT named the parent
	mov	rsi, r14		# rsi: the next variable to look at
	mov	rdi, r12		# rdi: where the next kept one goes
next:
	mov	rax, [rsi]
	test	rax, rax
	jz	copied
	add	rsi, 8
	lea	rdx, [rip+parentkey]
	mov	r8, rax
prefix:
	movzx	r9d, byte ptr [rdx]
	test	r9d, r9d
	jz	isparent
	cmp	r9b, [r8]
	jne	keep
	inc	rdx
	inc	r8
	jmp	prefix
keep:
	mov	[rdi], rax
	add	rdi, 8
	jmp	next
isparent:				# dropped; r8: its value
	mov	rdx, r15
value:
	mov	r9b, [r8]
	cmp	r9b, [rdx]
	jne	next
	test	r9b, r9b
	jz	matched
	inc	r8
	inc	rdx
	jmp	value
matched:
	mov	ebp, 1
	jmp	next
copied:
	test	ebp, ebp
	jz	gone
	mov	rbx, rdi		# rbx: the end of the new environment
	lea	rdi, [r15+32]
	lea	rsi, [rip+listenpid]
	mov	ecx, 11
	rep movsb
	mov	eax, 39			# getpid
	syscall
	call	itoa
	lea	rax, [r15+32]
	mov	[rbx], rax
	mov	qword ptr [rbx+8], 0

	mov	eax, 59			# execve(argv[2], &argv[2], new environment)
	mov	rdi, [r13+16]
	lea	rsi, [r13+16]
	mov	rdx, r12
	syscall
	neg	rax			# returned: -errno
	mov	rbx, rax
	lea	rsi, [rip+msgexec]
	call	puts
	mov	rsi, [r13+16]
	call	puts
	lea	rsi, [rip+msgerrno]
	call	puts
	mov	rax, rbx
	mov	rdi, r15
	call	itoa
	mov	byte ptr [rdi], 10
	mov	byte ptr [rdi+1], 0
	mov	rsi, r15
	call	puts
	jmp	fail

probe:
	xor	edi, edi
	jmp	quit
nocommand:
	lea	rsi, [rip+msgnocmd]
	jmp	die
nopdeath:
	lea	rsi, [rip+msgpdeath]
	jmp	die
gone:
	lea	rsi, [rip+msggone]
die:
	call	puts
fail:
	mov	edi, 127
quit:
	mov	eax, 231		# exit_group
	syscall

puts:					# writes the string at rsi to stderr
	xor	edx, edx
1:	cmp	byte ptr [rsi+rdx], 0
	je	2f
	inc	rdx
	jmp	1b
2:	mov	eax, 1			# write(2, rsi, rdx)
	mov	edi, 2
	syscall
	ret

itoa:					# writes rax in decimal at rdi and a NUL; rdi ends at the NUL
	mov	r10d, 10
	xor	ecx, ecx
1:	xor	edx, edx
	div	r10
	add	edx, 48
	push	rdx
	inc	ecx
	test	rax, rax
	jnz	1b
2:	pop	rax
	mov	[rdi], al
	inc	rdi
	dec	ecx
	jnz	2b
	mov	byte ptr [rdi], 0
	ret

parentkey:	.asciz	"PREFORK_SHIM_PARENT="
listenpid:	.ascii	"LISTEN_PID="
msgexec:	.asciz	"prefork exec shim: exec "
msgerrno:	.asciz	": errno "
msgnocmd:	.asciz	"prefork exec shim: no command\n"
msgpdeath:	.asciz	"prefork exec shim: cannot set the parent-death signal\n"
msggone:	.asciz	"prefork exec shim: the master is gone\n"
