package child

import (
	"net"
	"testing"
	"time"
)

// requestArriving sees bytes a client sent that the server has not read,
// and nothing on a quiet connection.
func TestRequestArriving(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if requestArriving(server) {
		t.Fatal("a quiet connection reads as arriving")
	}
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !requestArriving(server) {
		if time.Now().After(deadline) {
			t.Fatal("bytes sent by the client never read as arriving")
		}
		time.Sleep(time.Millisecond)
	}
	// Peeking consumed nothing.
	buf := make([]byte, 64)
	n, err := server.Read(buf)
	if err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("read after peek = %q, %v", buf[:n], err)
	}
}
