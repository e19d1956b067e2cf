package api

import "encoding/json"

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
	// Type and Param are set on the OpenAI-compatible routes, whose
	// clients expect OpenAI's error shape (OpenAIError): the kind of error,
	// invalid_request_error or server_error, and the request field at
	// fault, null when none is named.
	Type  string          `json:"type,omitempty"`
	Param json.RawMessage `json:"param,omitempty"`
}

// OpenAIError is the error shape of the OpenAI-compatible routes.
func OpenAIError(typ, code, msg string) ErrorBody {
	return ErrorBody{Error: ErrorDetail{Code: code, Message: msg, Type: typ, Param: json.RawMessage("null")}}
}
