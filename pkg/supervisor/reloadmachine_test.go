package supervisor

import (
	"slices"
	"testing"
)

// The state machine, exhaustively over its phases and inputs.
func TestReloadMachine(t *testing.T) {
	idle := reloadMachine{}
	loading := reloadMachine{phase: reloadLoading}
	loadingAgain := reloadMachine{phase: reloadLoading, again: true}
	spawning := reloadMachine{phase: reloadSpawning}
	spawningAgain := reloadMachine{phase: reloadSpawning, again: true}
	waiting2 := reloadMachine{phase: reloadStarting, waiting: 2}
	waiting1 := reloadMachine{phase: reloadStarting, waiting: 1}
	waiting1Again := reloadMachine{phase: reloadStarting, waiting: 1, again: true}
	end := func(outcome reloadAction) []reloadAction { return []reloadAction{outcome, actAnswer} }
	endAgain := func(outcome reloadAction) []reloadAction { return []reloadAction{outcome, actAnswer, actLoad} }
	tests := []struct {
		name        string
		from        reloadMachine
		in          reloadInput
		want        reloadMachine
		wantActions []reloadAction
	}{
		{name: "request loads", from: idle, in: reloadInput{kind: inRequest}, want: loading, wantActions: []reloadAction{actLoad}},
		{name: "idle ignores loaded", from: idle, in: reloadInput{kind: inLoaded}, want: idle},
		{name: "idle ignores spawned", from: idle, in: reloadInput{kind: inSpawned, n: 2}, want: idle},
		{name: "idle ignores rejected", from: idle, in: reloadInput{kind: inRejected}, want: idle},
		{name: "idle ignores ready", from: idle, in: reloadInput{kind: inNewReady}, want: idle},
		{name: "idle ignores failed", from: idle, in: reloadInput{kind: inNewFailed}, want: idle},
		{name: "idle stop does nothing", from: idle, in: reloadInput{kind: inStop}, want: idle},

		{name: "loaded begins", from: loading, in: reloadInput{kind: inLoaded}, want: spawning, wantActions: []reloadAction{actBegin}},
		{name: "loaded keeps the coalesced one", from: loadingAgain, in: reloadInput{kind: inLoaded}, want: spawningAgain, wantActions: []reloadAction{actBegin}},
		{name: "a read that failed or timed out rejects", from: loading, in: reloadInput{kind: inRejected}, want: idle, wantActions: end(actReject)},
		{name: "a rejected read runs the coalesced one", from: loadingAgain, in: reloadInput{kind: inRejected}, want: loading, wantActions: endAgain(actReject)},
		{name: "request while loading coalesces", from: loading, in: reloadInput{kind: inRequest}, want: loadingAgain},
		{name: "loading stop abandons", from: loadingAgain, in: reloadInput{kind: inStop}, want: idle, wantActions: []reloadAction{actAbandon}},
		{name: "loading ignores ready", from: loading, in: reloadInput{kind: inNewReady}, want: loading},
		{name: "loading ignores a failure", from: loading, in: reloadInput{kind: inNewFailed}, want: loading},
		{name: "loading ignores spawned", from: loading, in: reloadInput{kind: inSpawned, n: 2}, want: loading},

		{name: "spawned waits for every child", from: spawning, in: reloadInput{kind: inSpawned, n: 2}, want: waiting2},
		{name: "spawned none commits", from: spawning, in: reloadInput{kind: inSpawned}, want: idle, wantActions: end(actCommit)},
		{name: "a failed start rolls back", from: spawning, in: reloadInput{kind: inSpawned, n: 2, failed: true}, want: idle, wantActions: end(actRollback)},
		{name: "rejected", from: spawning, in: reloadInput{kind: inRejected}, want: idle, wantActions: end(actReject)},
		{name: "rejected runs the coalesced one", from: spawningAgain, in: reloadInput{kind: inRejected}, want: loading, wantActions: endAgain(actReject)},
		{name: "spawning ignores a late load", from: spawning, in: reloadInput{kind: inLoaded}, want: spawning},
		{name: "request while spawning coalesces", from: spawning, in: reloadInput{kind: inRequest}, want: spawningAgain},
		{name: "spawning stop abandons", from: spawningAgain, in: reloadInput{kind: inStop}, want: idle, wantActions: []reloadAction{actAbandon}},
		{name: "spawning ignores ready", from: spawning, in: reloadInput{kind: inNewReady}, want: spawning},
		{name: "spawning ignores a failure", from: spawning, in: reloadInput{kind: inNewFailed}, want: spawning},
		{name: "a stray ready does not spend the count", from: reloadMachine{phase: reloadStarting}, in: reloadInput{kind: inNewReady}, want: reloadMachine{phase: reloadStarting}},

		{name: "one of two ready", from: waiting2, in: reloadInput{kind: inNewReady}, want: waiting1},
		{name: "last ready commits", from: waiting1, in: reloadInput{kind: inNewReady}, want: idle, wantActions: end(actCommit)},
		{name: "commit runs the coalesced one", from: waiting1Again, in: reloadInput{kind: inNewReady}, want: loading, wantActions: endAgain(actCommit)},
		{name: "a failure rolls back", from: waiting2, in: reloadInput{kind: inNewFailed}, want: idle, wantActions: end(actRollback)},
		{name: "rollback runs the coalesced one", from: waiting1Again, in: reloadInput{kind: inNewFailed}, want: loading, wantActions: endAgain(actRollback)},
		{name: "requests coalesce into one", from: waiting1Again, in: reloadInput{kind: inRequest}, want: waiting1Again},
		{name: "request while starting coalesces", from: waiting1, in: reloadInput{kind: inRequest}, want: waiting1Again},
		{name: "a second spawned is ignored", from: waiting2, in: reloadInput{kind: inSpawned, n: 5}, want: waiting2},
		{name: "a late rejection is ignored", from: waiting2, in: reloadInput{kind: inRejected}, want: waiting2},
		{name: "a late load is ignored", from: waiting2, in: reloadInput{kind: inLoaded}, want: waiting2},
		{name: "starting stop abandons", from: waiting2, in: reloadInput{kind: inStop}, want: idle, wantActions: []reloadAction{actAbandon}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, actions := tc.from.step(tc.in)
			if got != tc.want || !slices.Equal(actions, tc.wantActions) {
				t.Errorf("step(%+v) from %+v = %+v, %v; want %+v, %v", tc.in, tc.from, got, actions, tc.want, tc.wantActions)
			}
		})
	}
}
