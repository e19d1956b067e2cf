package openai

import (
	"bytes"
	"encoding/json"
)

// setModel returns body with its top-level "model" string set to model,
// every other byte as it was; a body without one, or that is not a JSON
// object, comes back unchanged.
func setModel(body []byte, model string) []byte {
	start, end, ok := topLevelString(body, "model")
	if !ok {
		return body
	}
	val, err := json.Marshal(model)
	if err != nil || bytes.Equal(body[start:end], val) {
		return body
	}
	out := make([]byte, 0, len(body)-(end-start)+len(val))
	out = append(out, body[:start]...)
	out = append(out, val...)
	return append(out, body[end:]...)
}

// topLevelString finds the value of key in a JSON object when it is a
// string: the offsets of its quoted form.
func topLevelString(body []byte, key string) (start, end int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, 0, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return 0, 0, false
		}
		from := int(dec.InputOffset())
		if k != key {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, 0, false
			}
			continue
		}
		t, err := dec.Token()
		if _, isString := t.(string); err != nil || !isString {
			return 0, 0, false
		}
		end := int(dec.InputOffset())
		// The value follows the colon and any space after the key.
		rest := body[from:end]
		colon := bytes.IndexByte(rest, ':')
		if colon < 0 {
			return 0, 0, false
		}
		lead := len(rest) - len(bytes.TrimLeft(rest[colon+1:], " \t\r\n"))
		return from + lead, end, true
	}
	return 0, 0, false
}

// usageOnly reports whether a chunk is the usage-only last chunk of a
// stream: no choices, and usage.
func usageOnly(payload []byte) bool {
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return false
	}
	return len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}
