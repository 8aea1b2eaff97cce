package lineprefix

import (
	"bytes"
	"fmt"
	"testing"
)

// piece is what a splitter emitted, copied.
type piece struct {
	data      string
	continued bool
}

// String shows a piece quoted, "+" before it if continued.
func (p piece) String() string {
	if p.continued {
		return fmt.Sprintf("+%q", p.data)
	}
	return fmt.Sprintf("%q", p.data)
}

// split feeds data to a splitter in chunks of chunk bytes (all at once if
// chunk is 0) and returns the pieces.
func split(data []byte, max, chunk int) []piece {
	var out []piece
	emit := func(p []byte, cont bool) { out = append(out, piece{string(p), cont}) }
	s := splitter{max: max}
	if chunk <= 0 {
		chunk = len(data) + 1
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		s.write(data[:n], emit)
		data = data[n:]
	}
	s.flush(emit)
	return out
}

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []piece
	}{
		{name: "lines", in: "a\nbc\n", max: 4, want: []piece{{"a", false}, {"bc", false}}},
		{name: "empty lines kept", in: "\n\nx\n", max: 4, want: []piece{{"", false}, {"", false}, {"x", false}}},
		{name: "unterminated last", in: "a\nb", max: 4, want: []piece{{"a", false}, {"b", false}}},
		{name: "exactly max is not cut", in: "abcd\nef\n", max: 4, want: []piece{{"abcd", false}, {"ef", false}}},
		{name: "exactly max, unterminated", in: "abcd", max: 4, want: []piece{{"abcd", false}}},
		{
			name: "cut into pieces",
			in:   "abcdefghij\nk\n",
			max:  4,
			want: []piece{{"abcd", false}, {"efgh", true}, {"ij", true}, {"k", false}},
		},
		{
			name: "cut at a multiple of max",
			in:   "abcdefgh\n",
			max:  4,
			want: []piece{{"abcd", false}, {"efgh", true}},
		},
		{name: "binary passes", in: "\x00\xff\r\x1b[1m\n", max: 8, want: []piece{{"\x00\xff\r\x1b[1m", false}}},
		{name: "nothing", in: "", max: 4, want: nil},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1, 3} {
			got := split([]byte(tt.in), tt.max, chunk)
			if !equal(got, tt.want) {
				t.Errorf("%s, chunks of %d: got %v, want %v", tt.name, chunk, got, tt.want)
			}
		}
	}
}

func equal(a, b []piece) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzSplit checks the splitter's invariants on any input, cut into reads
// of any size: pieces hold no newline and at most max bytes; only a piece
// of max bytes is continued; joined back they give the input (with a final
// newline added); and the reads' sizes do not change the pieces.
func FuzzSplit(f *testing.F) {
	f.Add([]byte("a\nbb\nccc"), uint8(2), uint8(1))
	f.Add([]byte("abcdefgh\n\n"), uint8(4), uint8(3))
	f.Add([]byte("\x00\n\xff\xfe"), uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, max, chunk uint8) {
		m := int(max%16) + 1
		got := split(data, m, int(chunk))
		if whole := split(data, m, 0); !equal(got, whole) {
			t.Fatalf("reads of %d: %v; at once: %v", chunk, got, whole)
		}
		var joined bytes.Buffer
		for i, p := range got {
			if len(p.data) > m || bytes.IndexByte([]byte(p.data), '\n') >= 0 {
				t.Fatalf("piece %d %q: longer than %d or holds a newline", i, p.data, m)
			}
			if p.continued && (i == 0 || len(got[i-1].data) != m) {
				t.Fatalf("piece %d continues a piece that was not full: %v", i, got)
			}
			if i > 0 && !p.continued {
				joined.WriteByte('\n')
			}
			joined.WriteString(p.data)
		}
		want := data
		if len(want) > 0 && want[len(want)-1] == '\n' {
			want = want[:len(want)-1]
		}
		if !bytes.Equal(joined.Bytes(), want) {
			t.Fatalf("joined %q, want %q", joined.Bytes(), want)
		}
	})
}
