package refworker

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sort"
)

// EmbeddingSize is the length of the reference worker's embeddings.
const EmbeddingSize = 8

type embeddingRequest struct {
	Model string          `json:"model"`
	Input json.RawMessage `json:"input"`
}

type embedding struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float64 `json:"embedding"`
}

type embeddingResponse struct {
	Object string      `json:"object"`
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  usage       `json:"usage"`
}

type rerankRequest struct {
	Model     string   `json:"model"`
	Query     string   `json:"query"`
	Documents []string `json:"documents"`
	TopN      *int     `json:"top_n"`
}

type rerankResult struct {
	Index          int     `json:"index"`
	RelevanceScore float64 `json:"relevance_score"`
}

type rerankResponse struct {
	Model   string         `json:"model"`
	Object  string         `json:"object"`
	Usage   usage          `json:"usage"`
	Results []rerankResult `json:"results"`
}

// embed is text's embedding: unit length, the same for the same text.
func embed(text string) []float64 {
	g := newGenerator(text)
	v := make([]float64, EmbeddingSize)
	var norm float64
	for i := range v {
		v[i] = float64(int64(g.next()%2001)-1000) / 1000
		norm += v[i] * v[i]
	}
	if norm == 0 {
		v[0], norm = 1, 1
	}
	for i := range v {
		v[i] /= math.Sqrt(norm)
	}
	return v
}

// inputs is an embeddings request's input: a string or a list of strings.
func inputs(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
		return nil, errors.New("input must be a string or a non-empty list of strings")
	}
	return list, nil
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingRequest
	if !decode(w, r, &req) || !s.knownModel(w, req.Model) {
		return
	}
	texts, err := inputs(req.Input)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error())
		return
	}
	s.requests.Add(1)
	out := embeddingResponse{Object: "list", Model: s.modelID, Data: []embedding{}}
	n := 0
	for i, t := range texts {
		n += countTokens(t)
		out.Data = append(out.Data, embedding{Object: "embedding", Index: i, Embedding: embed(t)})
	}
	out.Usage = usage{PromptTokens: n, TotalTokens: n}
	writeJSON(w, http.StatusOK, out)
}

// rerank scores documents against the query by their embeddings' cosine,
// in llama-server's shape, best first.
func (s *Server) rerank(w http.ResponseWriter, r *http.Request) {
	var req rerankRequest
	if !decode(w, r, &req) || !s.knownModel(w, req.Model) {
		return
	}
	if req.Query == "" || len(req.Documents) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", "query and documents are required")
		return
	}
	s.requests.Add(1)
	q := embed(req.Query)
	out := rerankResponse{Model: s.modelID, Object: "list", Results: []rerankResult{}}
	n := countTokens(req.Query)
	for i, d := range req.Documents {
		n += countTokens(d)
		var dot float64
		for k, x := range embed(d) {
			dot += x * q[k]
		}
		out.Results = append(out.Results, rerankResult{Index: i, RelevanceScore: dot})
	}
	sort.SliceStable(out.Results, func(i, k int) bool { return out.Results[i].RelevanceScore > out.Results[k].RelevanceScore })
	if req.TopN != nil && *req.TopN >= 0 && *req.TopN < len(out.Results) {
		out.Results = out.Results[:*req.TopN]
	}
	out.Usage = usage{PromptTokens: n, TotalTokens: n}
	writeJSON(w, http.StatusOK, out)
}
