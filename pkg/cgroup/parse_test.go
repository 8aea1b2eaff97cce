package cgroup

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []mount
		wantErr bool
	}{
		{
			name: "hybrid, as on the build machines",
			in: `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`,
			want: []mount{{root: "/", point: "/sys/fs/cgroup/unified"}},
		},
		{
			name: "pure v2 with optional fields",
			in: `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`,
			want: []mount{{root: "/", point: "/sys/fs/cgroup"}},
		},
		{
			name: "escaped space, tab and backslash",
			in:   `50 22 0:40 /a\040b /mnt/cg\040two\011x\134y rw - cgroup2 none rw` + "\n",
			want: []mount{{root: "/a b", point: "/mnt/cg two\tx\\y"}},
		},
		{
			name: "bind mount of a subtree, no optional fields, no trailing newline",
			in:   `700 650 0:27 /system.slice/docker-1.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw`,
			want: []mount{{root: "/system.slice/docker-1.scope", point: "/sys/fs/cgroup"}},
		},
		{
			name: "empty source field",
			in:   `60 22 0:41 / /cg rw - cgroup2  rw`,
			want: []mount{{root: "/", point: "/cg"}},
		},
		{
			name: "v1 only",
			in:   `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu`,
			want: nil,
		},
		{
			name:    "no separator",
			in:      `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime cgroup2 cgroup rw`,
			wantErr: true,
		},
		{
			name:    "separator too late",
			in:      `32 31 0:29 / /x rw shared:1 - cgroup2`,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountinfo([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, `plain`},
		{`a\040b`, `a b`},
		{`\134`, `\`},
		{`end\04`, `end\04`}, // too short to be an escape
		{`\089`, `\089`},     // not octal
		{`\012\040`, "\n "},
	}
	for _, tt := range tests {
		if got := unescapeOctal(tt.in); got != tt.want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{
			name: "hybrid, master in the root",
			in:   "9:name=systemd:/\n4:memory:/process_api/ecf8\n1:cpu:/\n0::/\n",
			want: "/",
		},
		{
			name: "hybrid, systemd service",
			in:   "12:pids:/system.slice/prefork.service\n1:name=systemd:/system.slice/prefork.service\n0::/system.slice/prefork.service\n",
			want: "/system.slice/prefork.service",
		},
		{
			name: "pure v2",
			in:   "0::/system.slice/prefork.service\n",
			want: "/system.slice/prefork.service",
		},
		{
			name: "path with colons",
			in:   "0::/a:b:c\n",
			want: "/a:b:c",
		},
		{
			name: "cgroup namespace, moved out of it",
			in:   "0::/../sibling\n",
			want: "/../sibling",
		},
		{
			name:    "v1 only",
			in:      "12:pids:/user.slice\n1:name=systemd:/user.slice\n",
			wantErr: errNoV2,
		},
		{
			name:    "empty",
			in:      "",
			wantErr: errNoV2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcCgroup([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := parseProcCgroup([]byte("0::relative\n")); err == nil {
		t.Error("relative path: no error")
	}
}

func TestResolve(t *testing.T) {
	unified := []mount{{root: "/", point: "/sys/fs/cgroup/unified"}}
	tests := []struct {
		name    string
		mounts  []mount
		path    string
		want    string
		wantErr string
	}{
		{name: "root cgroup", mounts: unified, path: "/", want: "/sys/fs/cgroup/unified"},
		{name: "service", mounts: []mount{{root: "/", point: "/sys/fs/cgroup"}}, path: "/system.slice/p.service", want: "/sys/fs/cgroup/system.slice/p.service"},
		{
			name:   "bind-mounted subtree",
			mounts: []mount{{root: "/system.slice/docker-1.scope", point: "/sys/fs/cgroup"}},
			path:   "/system.slice/docker-1.scope/init",
			want:   "/sys/fs/cgroup/init",
		},
		{
			name:   "bind-mounted subtree, at its root",
			mounts: []mount{{root: "/system.slice/docker-1.scope/", point: "/sys/fs/cgroup"}},
			path:   "/system.slice/docker-1.scope",
			want:   "/sys/fs/cgroup",
		},
		{
			name:   "deepest root wins",
			mounts: []mount{{root: "/a", point: "/m1"}, {root: "/", point: "/m0"}},
			path:   "/a/b",
			want:   "/m1/b",
		},
		{
			name:    "prefix is not a parent",
			mounts:  []mount{{root: "/a", point: "/m"}},
			path:    "/ab",
			wantErr: "not under any cgroup2 mount",
		},
		{
			name:    "mounted outside this cgroup namespace",
			mounts:  []mount{{root: "/..", point: "/sys/fs/cgroup"}},
			path:    "/",
			wantErr: "mount cgroup2 again inside this cgroup namespace",
		},
		{name: "no mount", path: "/", wantErr: errNoV2.Error()},
		{name: "outside namespace", mounts: unified, path: "/../x", wantErr: "outside this cgroup namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolve(tt.mounts, tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseEvents(t *testing.T) {
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{in: "populated 1\nfrozen 0\n", want: true},
		{in: "populated 0\nfrozen 1\n", want: false},
		{in: "frozen 0\n", wantErr: true},
		{in: "populated yes\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseEvents([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseEvents(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseFrozen(t *testing.T) {
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{in: "populated 1\nfrozen 1\n", want: true},
		{in: "populated 1\nfrozen 0\n", want: false},
		{in: "populated 0\nfrozen 1", want: true},
		{in: "populated 1\n", wantErr: true}, // kernel < 5.2: no freezer
		{in: "frozen 2\n", wantErr: true},
		{in: "unfrozen 1\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseFrozen([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseFrozen(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseFreeze(t *testing.T) {
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{in: "0\n", want: false},
		{in: "1\n", want: true},
		{in: "1", want: true},
		{in: "", wantErr: true},
		{in: "frozen\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseFreeze([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseFreeze(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParsePids(t *testing.T) {
	got, err := parsePids([]byte("12\n345\n"))
	if err != nil || !reflect.DeepEqual(got, []int{12, 345}) {
		t.Errorf("got %v, %v", got, err)
	}
	if got, err := parsePids(nil); err != nil || got != nil {
		t.Errorf("empty: got %v, %v", got, err)
	}
	if _, err := parsePids([]byte("12\nx\n")); err == nil {
		t.Error("no error for a non-number")
	}
}

func TestParseState(t *testing.T) {
	status := "Name:\tsleep\nUmask:\t0022\nState:\tD (disk sleep)\nTgid:\t7\n"
	if got := parseState([]byte(status)); got != "D (disk sleep)" {
		t.Errorf("got %q", got)
	}
	if got := parseState(nil); got != "" {
		t.Errorf("empty: got %q", got)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"prefork-1-0", "a.b", "x y"} {
		if err := checkName(ok); err != nil {
			t.Errorf("checkName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a\nb", "cgroup.procs"} {
		if err := checkName(bad); err == nil {
			t.Errorf("checkName(%q): no error", bad)
		}
	}
}

func TestParseCPUStat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Duration
		err  bool
	}{
		{"v2", "usage_usec 3992978\nuser_usec 1922924\nsystem_usec 2070053\n", 3992978 * time.Microsecond, false},
		{"zero", "usage_usec 0\n", 0, false},
		{"missing", "user_usec 1\n", 0, true},
		{"garbage", "usage_usec x\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUStat([]byte(tt.in))
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parseCPUStat(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}
