package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestWithoutFlag(t *testing.T) {
	in := []string{"--sse-buffer", "64", "--pprof-addr", "127.0.0.1:6061", "--pprof-addr=127.0.0.1:6062", "--x"}
	got := withoutFlag(in, "--pprof-addr")
	if want := []string{"--sse-buffer", "64", "--x"}; !slices.Equal(got, want) {
		t.Errorf("withoutFlag = %q, want %q", got, want)
	}
}

func TestFinishedCount(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# TYPE rbee_jobs_finished_total counter\n" +
			"rbee_jobs_finished_total{operation=\"hive_check\",state=\"cancelled\"} 1\n" +
			"rbee_jobs_finished_total{operation=\"hive_check\",state=\"done\"} 100000\n"))
	}))
	defer srv.Close()
	n, err := finishedCount(context.Background(), srv.URL, "hive_check", "done")
	if err != nil || n != 100000 {
		t.Errorf("finishedCount = %v, %v; want 100000", n, err)
	}
	if _, err := finishedCount(context.Background(), srv.URL, "run", "done"); err == nil {
		t.Error("a missing series gave no error")
	}
}
