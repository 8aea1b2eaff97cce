package supervisor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LoadConfigFile reads only a regular file of at most 1 MiB that sets
// something, and refuses anything else at once, in one line: a fifo never
// blocks it, /dev/zero never fills the memory.
func TestLoadConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	const key = "workers: 3\n"
	padding := func(n int) string { return key + "#" + strings.Repeat("x", n-len(key)-2) + "\n" }
	tests := []struct {
		name    string
		path    string
		wantErr string // "": accepted, and sets workers to 3
	}{
		{name: "regular", path: file("ok.yaml", key)},
		{name: "exactly 1 MiB", path: file("limit.yaml", padding(1<<20))},
		{name: "one byte over 1 MiB", path: file("over.yaml", padding(1<<20+1)), wantErr: "larger than 1 MiB"},
		{name: "fifo", path: fifo, wantErr: "is not a regular file (it is a fifo)"},
		{name: "directory", path: dir, wantErr: "is not a regular file (it is a directory)"},
		{name: "dev zero", path: "/dev/zero", wantErr: "is not a regular file (it is a character device)"},
		{name: "symlink to dev zero", path: symlink(t, "/dev/zero", filepath.Join(dir, "zero.yaml")), wantErr: "is not a regular file"},
		{name: "symlink to a file", path: symlink(t, filepath.Join(dir, "ok.yaml"), filepath.Join(dir, "link.yaml"))},
		{name: "empty", path: file("empty.yaml", ""), wantErr: "truncated mid-deploy is the usual cause"},
		{name: "blank", path: file("blank.yaml", "\n \t\n"), wantErr: "the file sets nothing"},
		{name: "comments only", path: file("comments.yaml", "# workers: 3\n# listen: :80\n"), wantErr: "the file sets nothing"},
		{name: "absent", path: filepath.Join(dir, "absent.yaml"), wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig()
			done := make(chan error, 1)
			go func() { done <- LoadConfigFile(tt.path, &cfg) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("LoadConfigFile(%s) has not returned after 5 s", tt.path)
			}
			if tt.wantErr == "" {
				if err != nil || cfg.Workers != 3 {
					t.Fatalf("LoadConfigFile = %v, workers %d; want nil, 3", err, cfg.Workers)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "config") {
				t.Fatalf("LoadConfigFile = %v, want a config error with %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans more than one line", err)
			}
			if !reflect.DeepEqual(cfg, validConfig()) {
				t.Errorf("a refused file changed the config")
			}
		})
	}
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}
