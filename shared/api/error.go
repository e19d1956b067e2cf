package api

// Error codes of the JSON error shape {"error": {"code", "message"}}.
const (
	CodeBadRequest      = "bad_request"
	CodeInvalidJSON     = "invalid_json"
	CodeValidation      = "validation_failed"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	CodeTooLarge        = "payload_too_large"
	CodeUnauthorized    = "unauthorized"
	CodeForbidden       = "forbidden"
	CodeNoCapableHive   = "no_capable_hive"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
	CodeMethodNotAllow  = "method_not_allowed"
	CodeUnsupportedType = "unsupported_media_type"
	CodeMisdirected     = "misdirected_request"
	CodeQueueFull       = "queue_full"
)

// ErrorBody is the one error shape every HTTP answer uses.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: a stable snake_case code for programs and
// a sentence for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Type is set on the OpenAI-compatible routes, whose clients expect
	// OpenAI's error shape: invalid_request_error or server_error.
	Type string `json:"type,omitempty"`
}
