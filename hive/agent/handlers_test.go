package agent

import (
	"testing"

	"rbee.dev/shared/api"
)

// The hive handles every operation of the table that runs on a hive, and
// nothing the table does not list.
func TestHandlersFollowTheOperationTable(t *testing.T) {
	for name, spec := range api.Operations {
		if _, ok := handlers[name]; ok == spec.OnQueen {
			t.Errorf("operation %s: on queen %v, hive handler %v", name, spec.OnQueen, ok)
		}
	}
	for name := range handlers {
		if _, ok := api.Operations[name]; !ok {
			t.Errorf("handler for %s, which the operation table does not list", name)
		}
	}
}
