package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/prefork/prefork/internal/testkit"
)

var versionLine = regexp.MustCompile(`^master (\S+) \((\S+)\)\n$`)

// `master version` needs no master and prints one line; a running master
// reports the same version in `master status` (human and JSON) and in
// prefork_build_info.
func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, errOut := runMaster(t, "version")
	m := versionLine.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("master version: exit %d, stdout %q, stderr %q; want one line \"master VERSION (GOVERSION)\"", code, out, errOut)
	}
	version, goVersion := m[1], m[2]
	t.Logf("master %s (%s)", version, goVersion)
	if code, _, errOut := runMaster(t, "version", "extra"); code != 2 {
		t.Errorf("master version extra: exit %d (%s), want 2", code, strings.TrimSpace(errOut))
	}

	metricsAddr := testkit.FreeAddr(t)
	master := startMaster(t, "--workers", "1", "--metrics", metricsAddr)
	master.waitReady(1)

	code, out, errOut = master.ctl("status", "--json")
	var st struct {
		Version string `json:"version"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("master status --json: exit %d, %q, %s", code, out, errOut)
	}
	if st.Version != version {
		t.Errorf("master status --json: version %q, master version says %q", st.Version, version)
	}
	code, out, errOut = master.ctl("status")
	if want := ", version " + version + ","; code != 0 || !strings.Contains(out, want) {
		t.Errorf("master status: exit %d, %q (%s); want it to contain %q", code, out, errOut, want)
	}
	want := fmt.Sprintf("prefork_build_info{goversion=%q,version=%q} 1\n", goVersion, version)
	if text := scrape(t, metricsAddr); !strings.Contains(text, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}
