package freeze

import "testing"

func TestParseState(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    byte
		wantErr bool
	}{
		{name: "running", in: "123 (sh) R 1 123 123 0 -1", want: 'R'},
		{name: "stopped", in: "123 (sleep) T 1 123 123 0 -1\n", want: 'T'},
		{name: "traced", in: "123 (a.out) t 1", want: 't'},
		{name: "space and paren in comm", in: "77 (a) b) (c) S 1 77", want: 'S'},
		{name: "empty comm", in: "9 () Z 1", want: 'Z'},
		{name: "no comm", in: "123 R 1", wantErr: true},
		{name: "nothing after comm", in: "123 (sh)", wantErr: true},
		{name: "long state field", in: "123 (sh) RR 1", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseState([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseState(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestStill(t *testing.T) {
	for _, tt := range []struct {
		state byte
		want  bool
	}{
		{'R', false}, {'S', false}, {'I', false},
		{'T', true}, {'t', true}, {'D', true}, {'Z', true}, {'X', true},
	} {
		if got := still(tt.state); got != tt.want {
			t.Errorf("still(%q) = %v; want %v", tt.state, got, tt.want)
		}
	}
}
