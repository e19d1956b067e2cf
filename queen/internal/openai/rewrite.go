package openai

import (
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// setModel returns body with its top-level "model" string set to model,
// every other byte as it was; a body without one, or that is not a JSON
// object, comes back unchanged.
func setModel(body []byte, model string) []byte {
	if m := gjson.GetBytes(body, "model"); m.Type != gjson.String || m.Str == model {
		return body
	}
	out, err := sjson.SetBytes(body, "model", model)
	if err != nil {
		return body
	}
	return out
}

// usageOnly reports whether a chunk is the usage-only last chunk of a
// stream: no choices, and usage.
func usageOnly(payload []byte) bool {
	r := gjson.GetManyBytes(payload, "choices.#", "usage")
	return r[0].Int() == 0 && r[1].Exists() && r[1].Type != gjson.Null
}
