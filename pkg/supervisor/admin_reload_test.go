package supervisor

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The query of POST /reload: each parameter once, in range, or an error
// in one line that names it.
func TestParseReloadQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		query   string
		want    ReloadOptions
		wantErr string // the error's start; "" for none
	}{
		{name: "none", query: ""},
		{name: "generation", query: "strategy=generation", want: ReloadOptions{Strategy: StrategyGeneration}},
		{name: "rolling", query: "strategy=rolling", want: ReloadOptions{Strategy: StrategyRolling}},
		{name: "all", query: "strategy=rolling&max_surge=2&canary=1&canary_for=45s",
			want: ReloadOptions{Strategy: StrategyRolling, MaxSurge: 2, Canary: 1, CanaryFor: 45 * time.Second}},
		{name: "any order", query: "canary_for=1m30s&canary=3",
			want: ReloadOptions{Canary: 3, CanaryFor: 90 * time.Second}},
		{name: "max surge at the cap", query: "max_surge=" + strconv.Itoa(MaxWorkers), want: ReloadOptions{MaxSurge: MaxWorkers}},
		{name: "canary 0 turns it off", query: "canary=0", want: ReloadOptions{NoCanary: true}},
		{name: "escaped", query: "strat%65gy=rolling", want: ReloadOptions{Strategy: StrategyRolling}},

		{name: "strategy unknown", query: "strategy=blue-green", wantErr: `strategy: "blue-green" is not generation or rolling`},
		{name: "strategy case", query: "strategy=Rolling", wantErr: `strategy: "Rolling" is not generation or rolling`},
		{name: "strategy empty", query: "strategy=", wantErr: `strategy: "" is not generation or rolling`},
		{name: "strategy bare", query: "strategy", wantErr: `strategy: "" is not generation or rolling`},
		{name: "max surge 0", query: "max_surge=0", wantErr: "max_surge: 0 must be at least 1"},
		{name: "max surge negative", query: "max_surge=-2", wantErr: "max_surge: -2 must be at least 1"},
		{name: "max surge over the cap", query: "max_surge=" + strconv.Itoa(MaxWorkers+1),
			wantErr: "max_surge: " + strconv.Itoa(MaxWorkers+1) + " is out of range 1.."},
		{name: "max surge word", query: "max_surge=two", wantErr: `max_surge: "two" is not a whole number`},
		{name: "max surge plus", query: "max_surge=%2B2", wantErr: `max_surge: "+2" is not a whole number`},
		{name: "max surge space", query: "max_surge=+2", wantErr: `max_surge: " 2" is not a whole number`},
		{name: "max surge huge", query: "max_surge=99999999999999999999", wantErr: `max_surge: "99999999999999999999" is not a whole number`},
		{name: "canary negative", query: "canary=-1", wantErr: "canary: -1 must not be negative"},
		{name: "canary over the cap", query: "canary=" + strconv.Itoa(MaxWorkers+1),
			wantErr: "canary: " + strconv.Itoa(MaxWorkers+1) + " is out of range 0.."},
		{name: "canary for no unit", query: "canary_for=30", wantErr: `canary_for: "30" is not a duration`},
		{name: "canary for negative", query: "canary_for=-5s", wantErr: "canary_for: -5s must not be negative"},
		{name: "canary for empty", query: "canary_for=", wantErr: `canary_for: "" is not a duration`},
		{name: "twice", query: "canary=1&canary=2", wantErr: "canary: given 2 times"},
		{name: "first bad one named", query: "strategy=rolling&max_surge=0&canary=-1", wantErr: "max_surge: "},

		{name: "typo", query: "stratgy=rolling", wantErr: `unknown query parameter "stratgy" (known: strategy, max_surge, canary, canary_for)`},
		{name: "flag spelling", query: "max-surge=2", wantErr: `unknown query parameter "max-surge"`},
		{name: "typos sorted", query: "canary=1&zeta=1&alpha=2", wantErr: `unknown query parameter "alpha", "zeta"`},
		{name: "unknown beside good", query: "strategy=rolling&dry_run=1", wantErr: `unknown query parameter "dry_run"`},
		{name: "control character", query: "a%0Ab=1", wantErr: `unknown query parameter "a\nb"`},
		{name: "bad escape", query: "strategy=%zz", wantErr: "query: invalid URL escape"},
		{name: "semicolon", query: "strategy=rolling;canary=1", wantErr: "query: invalid semicolon separator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseReloadQuery(tt.query)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("parseReloadQuery(%q) = %v", tt.query, err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("parseReloadQuery(%q) = %+v, %v; want the error %q...", tt.query, got, err, tt.wantErr)
			case tt.wantErr != "" && got != (ReloadOptions{}):
				t.Fatalf("parseReloadQuery(%q) = %+v with its error, want no options", tt.query, got)
			case got != tt.want:
				t.Fatalf("parseReloadQuery(%q) = %+v, want %+v", tt.query, got, tt.want)
			}
		})
	}
}

// A query POST /reload does not take is 400 with the error, and reaches
// no loop: the Supervisor here has none, and would block on a reload.
func TestAdminReloadBadQuery(t *testing.T) {
	t.Parallel()
	admin := (&Supervisor{}).adminHandler()
	for _, target := range []string{
		"/reload?strategy=rollin", "/reload?max_surge=0", "/reload?canary=x", "/reload?canary_for=3",
		"/reload?strategy=rolling&stratgey=rolling", "/reload?max_surge=1&max_surge=2", "/reload?%zz",
	} {
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, httptest.NewRequest("POST", target, nil))
		body := rec.Body.String()
		if rec.Code != http.StatusBadRequest || !strings.HasPrefix(body, `{"generation":0,"error":"`) ||
			strings.Count(body, "\n") != 1 {
			t.Errorf("POST %s = %d %q, want 400 with the error", target, rec.Code, body)
		}
	}
}

// Whatever the query, parseReloadQuery answers options that pass Check
// and survive being sent again, or an error of one line that names a
// parameter or the query.
func FuzzReloadQuery(f *testing.F) {
	for _, seed := range []string{
		"", "strategy=rolling", "strategy=generation&max_surge=2", "canary=1&canary_for=10s",
		"max_surge=0", "canary=-1", "canary_for=-1s", "canary_for=1e3s", "canary=1&canary=1",
		"x=1", "strategy=%zz", "a;b", "max_surge=4097", "canary_for=9223372036854775807ns",
		"&&=&", "strategy=rolling&strategy=", "%00=%00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := parseReloadQuery(raw)
		if err != nil {
			msg := err.Error()
			named := strings.HasPrefix(msg, "query: ") || strings.HasPrefix(msg, "unknown query parameter ")
			for _, k := range reloadParams {
				named = named || strings.HasPrefix(msg, k+": ")
			}
			if !named || strings.ContainsAny(msg, "\r\n") || o != (ReloadOptions{}) {
				t.Fatalf("parseReloadQuery(%q) = %+v, %q", raw, o, msg)
			}
			return
		}
		if err := o.Check(); err != nil {
			t.Fatalf("parseReloadQuery(%q) = %+v, which Check refuses: %v", raw, o, err)
		}
		again, err := parseReloadQuery(encodeReloadOptions(o))
		if err != nil || again != o {
			t.Fatalf("parseReloadQuery(%q) = %+v, sent again %+v, %v", raw, o, again, err)
		}
	})
}

// encodeReloadOptions is the query of o's non-zero fields.
func encodeReloadOptions(o ReloadOptions) string {
	q := url.Values{}
	if o.Strategy != "" {
		q.Set(queryStrategy, o.Strategy)
	}
	if o.MaxSurge != 0 {
		q.Set(queryMaxSurge, strconv.Itoa(o.MaxSurge))
	}
	if o.Canary != 0 {
		q.Set(queryCanary, strconv.Itoa(o.Canary))
	}
	if o.CanaryFor != 0 {
		q.Set(queryCanaryFor, o.CanaryFor.String())
	}
	return q.Encode()
}
