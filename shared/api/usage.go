package api

import "time"

// UsageRecord is one finished inference job in the usage ledger: the key
// that created it, its model and the tokens its worker reported.
type UsageRecord struct {
	JobID            string    `json:"job_id"`
	KeyID            string    `json:"key_id"`
	KeyName          string    `json:"key_name,omitempty"`
	Model            string    `json:"model"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	Time             time.Time `json:"time"`
}

// UsageRow sums the usage of one key and one model.
type UsageRow struct {
	KeyID            string `json:"key_id"`
	KeyName          string `json:"key_name"`
	Model            string `json:"model"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
}

// UsageList is the answer to GET /v1/usage.
type UsageList struct {
	Usage []UsageRow `json:"usage"`
}
