package steer

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Offsets and values of the kernel's UAPI (include/uapi/linux/bpf.h).
const (
	// mdHash is the offset of the hash field in struct sk_reuseport_md:
	// after data and data_end (8 bytes each), len, eth_protocol,
	// ip_protocol and bind_inany (4 bytes each).
	mdHash = 32
	// mdMigratingSk is the offset of migrating_sk (Linux 5.14+): after
	// hash, 4 bytes of padding and the 8-byte sk pointer. NULL for a new
	// connection, the moving connection when a closing listener's queue
	// is handed on.
	mdMigratingSk = 48

	skPass = 1 // enum sk_action; the program never returns SK_DROP (0)
)

// stackKey is where the program keeps the uint32 key it hands to the map
// helpers, below the frame pointer.
const stackKey = -4

// Registers that survive helper calls.
const (
	regCtx    = asm.R6 // struct sk_reuseport_md *
	regPos    = asm.R7 // hash, then hash*n, then the position in spares
	regN      = asm.R8 // active slots, 1..maxSlots
	regSpares = asm.R9 // length of the spares list, 0..n
)

// programMaps are the maps the program reads, by descriptor.
type programMaps struct {
	sockets, health, spares, config *ebpf.Map
	runs                            *ebpf.Map // per CPU: times the program ran
	// conns, per CPU: the new connections the program placed, by slot,
	// and at key maxSlots those it left to the kernel (Connections).
	conns *ebpf.Map
	// migrating: the program is loaded to choose for migrating
	// connections too, and reads migrating_sk to count only new ones. A
	// program loaded as select-only must not read it (older kernels
	// have no such field).
	migrating bool
}

// program returns the steering program for at most maxSlots slots; the
// package documentation explains the steps, numbered here as there.
func program(maxSlots int, m programMaps) asm.Instructions {
	limit := int32(maxSlots)
	insns := asm.Instructions{
		asm.Mov.Reg(regCtx, asm.R1),
		// 0. runs[0] += 1 on this CPU, whatever follows: the master
		// compares it with the connections accepted (Runs).
		asm.StoreImm(asm.RFP, stackKey, 0, asm.Word),
	}
	insns = append(insns, lookup(m.runs, "counted")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(regPos, regCtx, mdHash, asm.Word).WithSymbol("counted"),

		// n and h from config[0]; n == 0: the kernel chooses.
		asm.StoreImm(asm.RFP, stackKey, 0, asm.Word),
	)
	insns = append(insns, lookup(m.config, "pass")...)
	insns = append(insns,
		asm.LoadMem(regN, asm.R0, 0, asm.Word),
		asm.LoadMem(regSpares, asm.R0, 4, asm.Word),
		asm.JEq.Imm(regN, 0, "pass"),
		asm.JLE.Imm(regN, limit, "n_ok"),
		asm.Mov.Imm(regN, limit),
		asm.JLE.Reg(regSpares, regN, "spares_ok").WithSymbol("n_ok"),
		asm.Mov.Reg(regSpares, regN),

		// 1. idx = (hash * n) >> 32, the kernel's pick.
		asm.Mul.Reg(regPos, regN).WithSymbol("spares_ok"),
		asm.Mov.Reg(asm.R1, regPos),
		asm.RSh.Imm(asm.R1, 32),
		asm.StoreMem(asm.RFP, stackKey, asm.R1, asm.Word),
	)
	insns = append(insns, trySlot(m, "spare")...)

	// 2. pos = (uint32(hash*n) * h) >> 32, a uniform place in spares.
	insns = append(insns,
		asm.JEq.Imm(regSpares, 0, "pass").WithSymbol("spare"),
		asm.Mov.Reg32(regPos, regPos),
		asm.Mul.Reg(regPos, regSpares),
		asm.RSh.Imm(regPos, 32),
	)
	// 2 and 3, unrolled: try spares[pos], spares[pos+1 mod h], ..., at
	// most min(h, probes) entries.
	for t := range probes {
		here, next := probeLabel(t), probeLabel(t+1)
		if t == probes-1 {
			next = "pass"
		}
		if t == 0 {
			insns = append(insns, asm.StoreMem(asm.RFP, stackKey, regPos, asm.Word).WithSymbol(here))
		} else {
			// (pos + t) mod h, without a branch: the verifier then
			// sees one state per try, not one per value of pos.
			insns = append(insns,
				asm.JLE.Imm(regSpares, int32(t), "pass").WithSymbol(here),
				asm.Mov.Reg(asm.R1, regPos),
				asm.Add.Imm(asm.R1, int32(t)),
				asm.Mod.Reg(asm.R1, regSpares),
				asm.StoreMem(asm.RFP, stackKey, asm.R1, asm.Word),
			)
		}
		insns = append(insns, lookup(m.spares, "pass")...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
			asm.JGE.Reg(asm.R1, regN, next),
			asm.StoreMem(asm.RFP, stackKey, asm.R1, asm.Word),
		)
		insns = append(insns, trySlot(m, next)...)
	}

	// 4. select nothing: the kernel's hash decides. Counted as
	// unplaced (conns[maxSlots]), a new connection only.
	insns = append(insns, countNew(m, "pass", "return", limit)...)
	return append(insns,
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("return"),
		asm.Return(),
	)
}

// countNew adds 1 on this CPU to conns[key] (key < 0: the key already on
// the stack), unless the program runs for a migrating connection, which
// stays counted where it was first placed; then it goes on. It jumps to
// done when it counts nothing. Its first instruction carries the label at,
// if any.
func countNew(m programMaps, at, done string, key int32) asm.Instructions {
	var insns asm.Instructions
	if m.migrating {
		insns = append(insns,
			asm.LoadMem(asm.R1, regCtx, mdMigratingSk, asm.DWord),
			asm.JNE.Imm(asm.R1, 0, done),
		)
	}
	if key >= 0 {
		insns = append(insns, asm.StoreImm(asm.RFP, stackKey, int64(key), asm.Word))
	}
	insns = append(insns, lookup(m.conns, done)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
	)
	if at != "" {
		insns[0] = insns[0].WithSymbol(at)
	}
	return insns
}

func probeLabel(t int) string { return fmt.Sprintf("probe%d", t) }

// lookup calls bpf_map_lookup_elem(m, &key) and jumps to miss when it
// returns NULL; otherwise R0 points at the value.
func lookup(m *ebpf.Map, miss string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
	}
}

// trySlot selects the slot whose number is the key on the stack, counts
// the connection for it and returns SK_PASS, if the slot is healthy and
// bpf_sk_select_reuseport accepts its socket; otherwise it goes on at
// fail.
func trySlot(m programMaps, fail string) asm.Instructions {
	insns := lookup(m.health, fail)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, 1, fail),
		asm.Mov.Reg(asm.R1, regCtx),
		asm.LoadMapPtr(asm.R2, m.sockets.FD()),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackKey),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	)
	// The key on the stack is still the slot: conns[slot] += 1.
	insns = append(insns, countNew(m, "", "return", -1)...)
	return append(insns, asm.Ja.Label("return"))
}
