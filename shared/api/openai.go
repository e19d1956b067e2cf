package api

// ModelEntry is one model of an OpenAI-compatible GET /v1/models answer,
// as the queen and the reference worker serve it.
type ModelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // always "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ModelEntryList is the answer of GET /v1/models.
type ModelEntryList struct {
	Object string       `json:"object"` // always "list"
	Data   []ModelEntry `json:"data"`
}
