package supervisor

import (
	"slices"
	"testing"
)

func TestReloadStep(t *testing.T) {
	idle := reloadState{}
	spawning := reloadState{phase: reloadStarting, waiting: -1}
	waiting2 := reloadState{phase: reloadStarting, waiting: 2}
	waiting1 := reloadState{phase: reloadStarting, waiting: 1}
	tests := []struct {
		name        string
		from        reloadState
		in          reloadInput
		want        reloadState
		wantActions []reloadAction
	}{
		{name: "request starts a reload", from: idle, in: reloadInput{kind: inRequest}, want: spawning, wantActions: []reloadAction{actBegin}},
		{name: "ready while idle is ignored", from: idle, in: reloadInput{kind: inNewReady}, want: idle},
		{name: "failure while idle is ignored", from: idle, in: reloadInput{kind: inNewFailed}, want: idle},
		{name: "spawned while idle is ignored", from: idle, in: reloadInput{kind: inSpawned, n: 2}, want: idle},
		{name: "rejected while idle is ignored", from: idle, in: reloadInput{kind: inRejected}, want: idle},

		{name: "spawned sets the count", from: spawning, in: reloadInput{kind: inSpawned, n: 2}, want: waiting2},
		{name: "spawned none commits", from: spawning, in: reloadInput{kind: inSpawned, n: 0}, want: idle, wantActions: []reloadAction{actCommit}},
		{name: "rejected ends the reload", from: spawning, in: reloadInput{kind: inRejected}, want: idle, wantActions: []reloadAction{actReject}},
		{name: "request during spawn is queued", from: spawning, in: reloadInput{kind: inRequest}, want: reloadState{phase: reloadStarting, waiting: -1, queued: true}},
		{name: "failure during spawn rolls back", from: spawning, in: reloadInput{kind: inNewFailed}, want: idle, wantActions: []reloadAction{actRollback}},
		{name: "ready before spawned is ignored", from: spawning, in: reloadInput{kind: inNewReady}, want: spawning},

		{name: "one of two ready", from: waiting2, in: reloadInput{kind: inNewReady}, want: waiting1},
		{name: "last ready commits", from: waiting1, in: reloadInput{kind: inNewReady}, want: idle, wantActions: []reloadAction{actCommit}},
		{name: "a failure rolls back", from: waiting2, in: reloadInput{kind: inNewFailed}, want: idle, wantActions: []reloadAction{actRollback}},
		{name: "a second spawned is ignored", from: waiting2, in: reloadInput{kind: inSpawned, n: 5}, want: waiting2},
		{name: "a late rejection is ignored", from: waiting2, in: reloadInput{kind: inRejected}, want: waiting2},
		{name: "requests coalesce", from: reloadState{phase: reloadStarting, waiting: 2, queued: true}, in: reloadInput{kind: inRequest}, want: reloadState{phase: reloadStarting, waiting: 2, queued: true}},

		{name: "commit runs the queued reload", from: reloadState{phase: reloadStarting, waiting: 1, queued: true}, in: reloadInput{kind: inNewReady}, want: spawning, wantActions: []reloadAction{actCommit, actBegin}},
		{name: "rollback runs the queued reload", from: reloadState{phase: reloadStarting, waiting: 1, queued: true}, in: reloadInput{kind: inNewFailed}, want: spawning, wantActions: []reloadAction{actRollback, actBegin}},
		{name: "reject runs the queued reload", from: reloadState{phase: reloadStarting, waiting: -1, queued: true}, in: reloadInput{kind: inRejected}, want: spawning, wantActions: []reloadAction{actReject, actBegin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, actions := tt.from.step(tt.in)
			if got != tt.want || !slices.Equal(actions, tt.wantActions) {
				t.Errorf("step(%+v, %+v) = %+v, %v; want %+v, %v", tt.from, tt.in, got, actions, tt.want, tt.wantActions)
			}
		})
	}
}

// However many requests arrive during a reload, exactly one more runs.
func TestReloadCoalescesToOneMore(t *testing.T) {
	s := reloadState{}
	begins := 0
	feed := func(in reloadInput) {
		var acts []reloadAction
		s, acts = s.step(in)
		for _, a := range acts {
			if a == actBegin {
				begins++
			}
		}
	}
	feed(reloadInput{kind: inRequest})
	for range 10 {
		feed(reloadInput{kind: inRequest})
	}
	feed(reloadInput{kind: inSpawned, n: 1})
	feed(reloadInput{kind: inNewReady})
	feed(reloadInput{kind: inSpawned, n: 1})
	feed(reloadInput{kind: inNewReady})
	if begins != 2 || s.phase != reloadIdle {
		t.Fatalf("11 requests during one reload: %d reloads begun, final state %+v; want 2 and idle", begins, s)
	}
}
