package api_test

import (
	"slices"
	"testing"

	"rbee.dev/shared/api"
)

// Every row of the operation table says all that its readers need.
func TestOperationTable(t *testing.T) {
	for name, spec := range api.Operations {
		if !slices.Contains(api.Scopes, spec.Scope) || spec.Summary == "" || spec.DefaultTimeout <= 0 {
			t.Errorf("operation %s: %+v", name, spec)
		}
	}
}

// The scopes operations need are those the API has always asked for.
func TestScopeForOperation(t *testing.T) {
	want := map[string]string{
		api.OpStatus: api.ScopeRead, api.OpHiveStatus: api.ScopeRead, api.OpModelList: api.ScopeRead, api.OpModelGet: api.ScopeRead,
		api.OpWorkerCatalogList: api.ScopeRead, api.OpWorkerList: api.ScopeRead, api.OpWorkerGet: api.ScopeRead,
		api.OpRun: api.ScopeAdmin, api.OpInfer: api.ScopeInfer,
		api.OpHiveCheck: api.ScopeOperate, api.OpModelDelete: api.ScopeOperate, api.OpModelDownload: api.ScopeOperate,
		api.OpWorkerSpawn: api.ScopeOperate, api.OpWorkerStop: api.ScopeOperate,
		"no_such_operation": api.ScopeOperate,
	}
	for op, scope := range want {
		if got := api.ScopeForOperation(op); got != scope {
			t.Errorf("ScopeForOperation(%s) = %s, want %s", op, got, scope)
		}
	}
	if len(want)-1 != len(api.Operations) {
		t.Errorf("the table has %d operations, the test knows %d", len(api.Operations), len(want)-1)
	}
}
