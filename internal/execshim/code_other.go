//go:build !amd64

package execshim

import "debug/elf"

// code is the shim's machine code; there is none for this architecture,
// where the master's own binary is the shim.
var code []byte

const machine = elf.EM_NONE
