package refworker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
)

// Recorded is one request as a recording worker (--record) wrote it: a
// line of JSON per request, the body byte for byte as a string.
type Recorded struct {
	Path string `json:"path"`
	Body string `json:"body"`
}

// Canned is a canned answer (--canned) for one path: Chunks, each an SSE
// data payload, when the request streams and there are chunks; else Body
// with Status (default 200). Both are written byte for byte as the file
// holds them. With Break, a stream is cut after its chunks, with no
// [DONE], as a worker that dies there cuts it; with Hold, it stays open
// after them, with no [DONE], until the client leaves.
type Canned struct {
	Status int               `json:"status"`
	Body   json.RawMessage   `json:"body"`
	Chunks []json.RawMessage `json:"chunks"`
	Break  bool              `json:"break"`
	Hold   bool              `json:"hold"`
}

// loadCanned reads a file of canned answers: a JSON object from path to
// Canned.
func loadCanned(path string) (map[string]Canned, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("canned answers: %w", err)
	}
	var out map[string]Canned
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("canned answers %s: %w", path, err)
	}
	return out, nil
}

// recorder writes each request body to the --record file, and answers a
// request whose path has a canned answer with it; other requests go on to
// next with their body intact.
type recorder struct {
	mu     sync.Mutex
	file   string
	canned map[string]Canned
}

func (rc *recorder) wrap(next http.HandlerFunc) http.HandlerFunc {
	if rc == nil || (rc.file == "" && rc.canned == nil) {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "payload_too_large", err.Error())
			return
		}
		if rc.file != "" {
			if err := rc.record(r.URL.Path, body); err != nil {
				writeError(w, http.StatusInternalServerError, "server_error", "record", err.Error())
				return
			}
		}
		c, ok := rc.canned[r.URL.Path]
		if !ok {
			r.Body = io.NopCloser(bytes.NewReader(body))
			next(w, r)
			return
		}
		var req struct {
			Stream bool `json:"stream"`
		}
		_ = json.Unmarshal(body, &req)
		if req.Stream && len(c.Chunks) > 0 {
			st := newStream(w)
			for _, ch := range c.Chunks {
				if st.raw(string(ch)) != nil {
					return
				}
			}
			if c.Break {
				panic(http.ErrAbortHandler) // the connection closes mid-answer
			}
			if c.Hold {
				<-r.Context().Done()
				return
			}
			_ = st.raw("[DONE]")
			return
		}
		status := c.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(c.Body)
	}
}

func (rc *recorder) record(path string, body []byte) error {
	line, err := json.Marshal(Recorded{Path: path, Body: string(body)})
	if err != nil {
		return err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	f, err := os.OpenFile(rc.file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
