package api

// InferResult is the data event that closes an infer job's tokens.
type InferResult struct {
	Model        string `json:"model"`
	WorkerID     string `json:"worker_id"`
	FinishReason string `json:"finish_reason"`
	Usage        Usage  `json:"usage"`
}

// Usage counts the tokens of one inference, as OpenAI does.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}
