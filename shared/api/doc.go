// Package api holds rbee's wire contract: the JSON shapes that travel over
// HTTP, SSE and NATS between clients, queens and hives, the operation names
// and the validation of job requests. It has no business logic and depends
// on nothing but the standard library.
package api
