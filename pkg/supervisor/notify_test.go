package supervisor

import "testing"

func TestParseNotify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want notification
	}{
		{name: "ready", in: "READY=1", want: notification{Ready: true}},
		{name: "ready with newline", in: "READY=1\n", want: notification{Ready: true}},
		{name: "ready among others", in: "STATUS=serving\nREADY=1\nMAINPID=42", want: notification{Ready: true, Status: "serving", MainPID: 42}},
		{name: "ready=0 is not ready", in: "READY=0", want: notification{}},
		{name: "stopping", in: "STOPPING=1", want: notification{Stopping: true}},
		{name: "reloading", in: "RELOADING=1\nMONOTONIC_USEC=123", want: notification{Reloading: true}},
		{name: "watchdog", in: "WATCHDOG=1", want: notification{Watchdog: true}},
		{name: "garbage lines skipped", in: "nonsense\n=\nREADY=1", want: notification{Ready: true}},
		{name: "bad mainpid ignored", in: "MAINPID=x", want: notification{}},
		{name: "empty", in: "", want: notification{}},
		{name: "status with equals", in: "STATUS=a=b", want: notification{Status: "a=b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseNotify([]byte(tt.in)); got != tt.want {
				t.Errorf("parseNotify(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseStatPPID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "plain", in: "1234 (child) S 77 1234 1234 0 -1", want: 77},
		{name: "spaces and parens in name", in: "1234 (my (odd) prog) R 9 1 1", want: 9},
		{name: "no name", in: "1234 child S 77", wantErr: true},
		{name: "truncated", in: "1234 (child) S", wantErr: true},
		{name: "bad ppid", in: "1234 (child) S x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatPPID([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatPPID(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
