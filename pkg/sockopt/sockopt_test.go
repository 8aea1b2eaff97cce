package sockopt

import (
	"path/filepath"
	"testing"
)

func TestParseMigrateReq(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    bool
		wantErr bool
	}{
		{name: "off", in: "0\n", want: false},
		{name: "on", in: "1\n", want: true},
		{name: "no newline", in: "1", want: true},
		{name: "other non-zero", in: "2\n", want: true},
		{name: "empty", in: "", wantErr: true},
		{name: "garbage", in: "yes\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMigrateReq([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMigrateReq(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseMigrateReq(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestReadMigrateReqAbsentIsZero(t *testing.T) {
	data, err := readMigrateReq(filepath.Join(t.TempDir(), "absent"))
	if err != nil {
		t.Fatal(err)
	}
	on, err := ParseMigrateReq(data)
	if err != nil || on {
		t.Fatalf("absent file: got (%v, %v), want (false, nil)", on, err)
	}
}
