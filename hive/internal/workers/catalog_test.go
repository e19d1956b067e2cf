package workers_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
)

func TestDefaultCatalog(t *testing.T) {
	bs, err := workers.LoadCatalog("")
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) == 0 || bs[0].Name != "reference" || bs[0].Kind != workers.KindReference || bs[0].HealthPath != "/health" {
		t.Fatalf("default catalog %+v", bs)
	}
	if !strings.HasSuffix(bs[0].Command[0], workers.ReferenceBinary) || !strings.Contains(strings.Join(bs[0].Command, " "), "--port {port}") {
		t.Fatalf("reference command %q", bs[0].Command)
	}
	for _, b := range bs[1:] {
		if b.Kind != workers.KindLlamaServer && b.Kind != workers.KindVLLM {
			t.Fatalf("unexpected default backend %+v", b)
		}
	}
}

func TestLoadCatalog(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    []string // names, on success
		wantErr []string // fragments of the error
	}{
		{
			name: "built-in kinds get their templates",
			file: `{"backends": [
				{"name": "reference"},
				{"name": "llama", "kind": "llama-server"},
				{"name": "mine", "kind": "command", "command": ["python", "serve.py", "--port", "{port}", "{model}"], "health_path": "/healthz"}
			], "other_setting": 1}`,
			want: []string{"reference", "llama", "mine"},
		},
		{name: "not JSON", file: `{"backends": [`, wantErr: []string{"unexpected end"}},
		{name: "no backends key", file: `{"workers": []}`, wantErr: []string{`no "backends" list`}},
		{name: "empty list", file: `{"backends": []}`, wantErr: []string{"no backends"}},
		{name: "unknown field", file: `{"backends": [{"name": "x", "cmd": ["a"]}]}`, wantErr: []string{`unknown field "cmd"`}},
		{
			name: "every problem at once",
			file: `{"backends": [
				{"name": "a b", "kind": "command", "command": ["srv", "{port}"]},
				{"name": "dup", "kind": "command", "command": ["srv", "{port}"]},
				{"name": "dup", "kind": "command", "command": ["srv", "{port}"]},
				{"name": "x", "kind": "docker", "command": ["srv", "{port}"]},
				{"name": "noport", "kind": "command", "command": ["srv", "{model}"]},
				{"name": "typo", "kind": "command", "command": ["srv", "{port}", "{modle}"]},
				{"name": "nocmd", "kind": "command"},
				{"name": "health", "kind": "command", "command": ["srv", "{port}"], "health_path": "health"}
			]}`,
			wantErr: []string{"name must be", "used twice", `unknown kind "docker"`, "must pass {port}", "unknown placeholder {modle}", "needs a command", "must start with /"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hive.json")
			if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			bs, err := workers.LoadCatalog(path)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("loaded %+v, want an error", bs)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, b := range bs {
				names = append(names, b.Name)
				if len(b.Command) == 0 || b.HealthPath == "" || b.Kind == "" {
					t.Errorf("backend not filled in: %+v", b)
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("names %v, want %v", names, tt.want)
			}
			if bs[1].Command[1] != "-m" || bs[2].HealthPath != "/healthz" || bs[0].Kind != workers.KindReference {
				t.Fatalf("catalog %+v", bs)
			}
		})
	}
	if _, err := workers.LoadCatalog(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("a missing config file loaded")
	}
}

// The catalog a supervisor reports is a copy: changing it changes nothing.
func TestCatalogIsACopy(t *testing.T) {
	s, _ := newSupervisor(t, t.TempDir())
	c := s.Catalog()
	c[0].Command[0] = "rm"
	if s.Catalog()[0].Command[0] == "rm" {
		t.Fatal("Catalog shares its slices")
	}
	if _, err := workers.New(workers.Config{DataDir: t.TempDir(), Backends: []api.Backend{{Name: "x", Kind: "command"}}}); err == nil {
		t.Fatal("New accepted a command backend without a command")
	}
}

func TestParallel(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    api.Backend
		want int
	}{
		{"reference takes 4, as llama-server", api.Backend{Kind: workers.KindReference, Command: []string{"rbee-worker", "--port", "{port}"}}, 4},
		{"a command has no limit", api.Backend{Kind: workers.KindCommand, Command: []string{"serve", "--port", "{port}"}}, 0},
		{"catalog setting wins", api.Backend{Kind: workers.KindLlamaServer, Parallel: 2, Command: []string{"llama-server", "--parallel", "8"}}, 2},
		{"catalog -1 is no limit", api.Backend{Kind: workers.KindLlamaServer, Parallel: -1}, 0},
		{"llama-server --parallel", api.Backend{Kind: workers.KindLlamaServer, Command: []string{"llama-server", "--parallel", "8", "--port", "{port}"}}, 8},
		{"llama-server -np=", api.Backend{Kind: workers.KindLlamaServer, Command: []string{"llama-server", "-np=3"}}, 3},
		{"llama-server default", api.Backend{Kind: workers.KindLlamaServer, Command: []string{"llama-server", "-np", "-1"}}, 4},
		{"vllm --max-num-seqs", api.Backend{Kind: workers.KindVLLM, Command: []string{"vllm", "serve", "--max-num-seqs", "16"}}, 16},
		{"vllm default", api.Backend{Kind: workers.KindVLLM}, 256},
		{"command without setting", api.Backend{Kind: workers.KindCommand, Command: []string{"serve", "--parallel", "2"}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := workers.Parallel(tc.b); got != tc.want {
				t.Fatalf("Parallel = %d, want %d", got, tc.want)
			}
		})
	}
}
