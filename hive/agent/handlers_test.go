package agent

import (
	"reflect"
	"testing"

	"rbee.dev/shared/api"
)

// The hive handles every operation of the table that runs on a hive, with
// the payload type the table names, and nothing the table does not list.
func TestHandlersFollowTheOperationTable(t *testing.T) {
	for name, spec := range api.Operations {
		h, ok := handlers[name]
		if ok == spec.OnQueen {
			t.Errorf("operation %s: on queen %v, hive handler %v", name, spec.OnQueen, ok)
		}
		if !ok {
			continue
		}
		var want reflect.Type
		if spec.Payload != nil {
			want = reflect.TypeOf(spec.Payload())
		}
		if h.payload != want {
			t.Errorf("operation %s: the table names payload %v, the handler takes %v", name, want, h.payload)
		}
	}
	for name := range handlers {
		if _, ok := api.Operations[name]; !ok {
			t.Errorf("handler for %s, which the operation table does not list", name)
		}
	}
}
