package supervisor

import (
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"testing"
)

// FuzzAdminRequest: any request to the admin API is answered with a code
// of its contract, never a panic, and a scale is done exactly when its
// query is a whole number of workers in range; a reload whose query is
// refused answers 400 and starts none. Stop and the reloads that run,
// which end or replace the harness's children, are left to their own
// tests.
func FuzzAdminRequest(f *testing.F) {
	for _, seed := range [][2]string{
		{"GET", "/status"}, {"POST", "/scale?workers=3"}, {"POST", "/scale?workers=0"},
		{"POST", "/scale?workers=-1"}, {"POST", "/scale?workers=4097"}, {"POST", "/scale?workers=1e3"},
		{"POST", "/scale?workers=99999999999999999999"}, {"POST", "/scale?workers=2&workers=5"},
		{"POST", "/scale?workers=%00"}, {"POST", "/scale?workers= 2"}, {"GET", "/scale?workers=2"},
		{"POST", "/status"}, {"PUT", "/scale"}, {"GET", "/nothing"}, {"GET", "/%2e%2e/status"},
		{"POST", "//scale?workers=2"}, {"DELETE", "/status"}, {"GET", "/status?x=" + strings.Repeat("a", 1000)},
		{"POST", "/reload?max_surge=0"}, {"POST", "/reload?strategy=rolling&canary=x"}, {"POST", "/reload?stratgy=rolling"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := http.NewRequest(method, "http://master"+target, nil)
		if err != nil || req.URL.Path == "" {
			return // not a request a client could send
		}
		_, queryErr := parseReloadQuery(req.URL.RawQuery)
		refused := method == http.MethodPost && req.URL.Path == "/reload" && queryErr != nil
		if p := path.Clean(req.URL.Path); strings.HasSuffix(p, "/stop") || strings.HasSuffix(p, "/reload") && !refused {
			return
		}
		h := newHarness(t, testConfig(t, 1))
		rec := httptest.NewRecorder()
		h.s.adminHandler().ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed,
			http.StatusConflict, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
		default:
			t.Fatalf("%s %q = %d %s", method, target, rec.Code, rec.Body)
		}
		if refused {
			h.settle()
			if rec.Code != http.StatusBadRequest || h.logs.count("reload requested") != 0 {
				t.Fatalf("POST %q = %d %s, %d reloads requested; want 400 and none", target, rec.Code, rec.Body,
					h.logs.count("reload requested"))
			}
			return
		}
		if method != http.MethodPost || req.URL.Path != "/scale" {
			return
		}
		n, err := strconv.Atoi(req.URL.Query().Get("workers"))
		want := http.StatusOK
		switch {
		case err != nil:
			want = http.StatusBadRequest
		case n < 1 || n > MaxWorkers:
			want = http.StatusConflict
		}
		if rec.Code != want {
			t.Fatalf("POST %q = %d %s, want %d", target, rec.Code, rec.Body, want)
		}
	})
}
