package sockopt

import (
	"context"
	"net"
	"testing"
)

// Two listeners with the option share one address; a plain one cannot join.
func TestListenSharesAddress(t *testing.T) {
	ctx := context.Background()
	a, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen(ctx, a.Addr().String())
	if err != nil {
		t.Fatalf("second reuseport listener on %s: %v", a.Addr(), err)
	}
	defer b.Close()
	if c, err := net.Listen("tcp", a.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("a listener without SO_REUSEPORT joined the group on %s", a.Addr())
	}
}

func TestCheckFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := CheckFree(addr); err == nil {
		t.Errorf("CheckFree(%s) with a plain listener on it = nil, want an error", addr)
	}
	ln.Close()
	if err := CheckFree(addr); err != nil {
		t.Errorf("CheckFree(%s) after close = %v, want nil", addr, err)
	}
	rp, err := Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := CheckFree(addr); err == nil {
		t.Errorf("CheckFree(%s) with a reuseport listener on it = nil, want an error", addr)
	}
}
