package supervisor

import (
	"os"
	"strings"
	"testing"
)

// The lookups behind --user and --group, as root (who may switch to
// anyone): names, numbers, a bare uid, and what is refused.
func TestResolveIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: an unprivileged master may not switch identity")
	}
	cfg := validConfig()
	tests := []struct {
		user, group string
		wantUID     uint32
		wantGID     uint32
		wantHome    bool
		wantErr     string
	}{
		{user: "nobody", wantUID: 65534, wantGID: 65534, wantHome: true},
		{user: "65534", wantUID: 65534, wantGID: 65534, wantHome: true},
		{user: "nobody", group: "0", wantUID: 65534, wantGID: 0, wantHome: true},
		{user: "4242", group: "4343", wantUID: 4242, wantGID: 4343, wantHome: true},
		{user: "4294967295", group: "4343", wantErr: "unchanged"},
		{user: "nobody", group: "4294967295", wantErr: "unchanged"},
		{user: "4242", wantErr: "give --group too"},
		{user: "no-such-user-here", wantErr: `no user "no-such-user-here"`},
		{user: "nobody", group: "no-such-group-here", wantErr: `no group "no-such-group-here"`},
		{group: "4343", wantUID: 0, wantGID: 4343},
	}
	for _, tt := range tests {
		cfg.User, cfg.Group = tt.user, tt.group
		id, err := resolveIdentity(cfg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q:%q: err %v, want %q", tt.user, tt.group, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q:%q: %v", tt.user, tt.group, err)
			continue
		}
		if id.uid != tt.wantUID || id.gid != tt.wantGID || (id.home != "") != tt.wantHome {
			t.Errorf("%q:%q: uid %d gid %d home %q; want %d %d home %v", tt.user, tt.group, id.uid, id.gid,
				id.home, tt.wantUID, tt.wantGID, tt.wantHome)
		}
	}
	cfg.User, cfg.Group = "", ""
	if id, err := resolveIdentity(cfg); id != nil || err != nil {
		t.Errorf("no user or group: %v, %v; want nil, nil", id, err)
	}
}
