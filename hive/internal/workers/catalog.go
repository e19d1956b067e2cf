package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Backend kinds.
const (
	// KindReference is rbee's own CPU-only test worker, rbee-worker.
	KindReference = "reference"
	// KindLlamaServer is llama.cpp's llama-server.
	KindLlamaServer = "llama-server"
	// KindVLLM is vLLM's OpenAI-compatible server.
	KindVLLM = "vllm"
	// KindCommand is any OpenAI-compatible server started from the
	// catalog's argv template.
	KindCommand = "command"
)

// DefaultHealthPath is where a worker answers 200 once it serves.
const DefaultHealthPath = "/health"

// ReferenceBinary is the reference worker's program name.
const ReferenceBinary = "rbee-worker"

// placeholders are the names an argv template may use. {model_id} is the
// catalog id, which the built-in templates pass on so that the worker
// answers to the same model name the hive lists.
var placeholders = []string{"model", "model_id", "port", "host", "gpus", "ctx"}

var placeholderRE = regexp.MustCompile(`\{[a-z_]+\}`)

// defaultCommand is the argv template of a built-in kind, with program the
// resolved path of its binary.
func defaultCommand(kind, program string) []string {
	switch kind {
	case KindReference:
		return []string{program, "--host", "{host}", "--port", "{port}", "--model", "{model}", "--model-id", "{model_id}", "--ctx-size", "{ctx}"}
	case KindLlamaServer:
		return []string{program, "-m", "{model}", "--host", "{host}", "--port", "{port}", "-c", "{ctx}", "--alias", "{model_id}"}
	case KindVLLM:
		return []string{program, "serve", "{model}", "--host", "{host}", "--port", "{port}", "--max-model-len", "{ctx}", "--served-model-name", "{model_id}"}
	}
	return nil
}

// program finds a built-in kind's binary: for the reference worker, next
// to the running executable first (make build puts them side by side),
// then on PATH. ok is false when it is nowhere, and the bare name is
// returned so that a later spawn reports the problem.
func program(kind string) (path string, ok bool) {
	name := kind
	if kind == KindReference {
		name = ReferenceBinary
		if exe, err := os.Executable(); err == nil {
			p := filepath.Join(filepath.Dir(exe), ReferenceBinary)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, true
			}
		}
	} else if kind == KindVLLM {
		name = "vllm"
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return p, true
	}
	return name, false
}

// DefaultCatalog is the catalog of a hive without a config file: the
// reference worker always, llama-server and vllm when their binaries are on
// PATH.
func DefaultCatalog() []api.Backend {
	ref, _ := program(KindReference)
	out := []api.Backend{{Name: KindReference, Kind: KindReference, Command: defaultCommand(KindReference, ref), HealthPath: DefaultHealthPath}}
	for _, kind := range []string{KindLlamaServer, KindVLLM} {
		if p, ok := program(kind); ok {
			out = append(out, api.Backend{Name: kind, Kind: kind, Command: defaultCommand(kind, p), HealthPath: DefaultHealthPath})
		}
	}
	return out
}

// LoadCatalog reads the worker catalog from a hive config file, or returns
// DefaultCatalog when path is empty. The file is a JSON object whose
// "backends" list replaces the default catalog:
//
//	{"backends": [
//	  {"name": "reference", "kind": "reference"},
//	  {"name": "llama", "kind": "llama-server", "command": ["/opt/llama/llama-server", "-m", "{model}", "--port", "{port}", "--host", "{host}", "-c", "{ctx}", "-ngl", "99"]},
//	  {"name": "mine", "kind": "command", "command": ["python", "serve.py", "--port", "{port}", "{model}"], "health_path": "/healthz"}
//	]}
//
// A built-in kind without a command gets its default template. Other
// top-level keys are left for other hive settings.
func LoadCatalog(path string) ([]api.Backend, error) {
	if path == "" {
		return DefaultCatalog(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("worker catalog: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("worker catalog %s: %w", path, err)
	}
	raw, ok := top["backends"]
	if !ok {
		return nil, fmt.Errorf("worker catalog %s: no \"backends\" list", path)
	}
	var bs []api.Backend
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bs); err != nil {
		return nil, fmt.Errorf("worker catalog %s: backends: %w", path, err)
	}
	out, err := NormalizeCatalog(bs)
	if err != nil {
		return nil, fmt.Errorf("worker catalog %s: %w", path, err)
	}
	return out, nil
}

// NormalizeCatalog fills defaults into a catalog (a built-in kind's
// template, the health path) and reports every problem at once: names must
// be unique tokens, kinds known, commands must bind {port} and use only
// known placeholders.
func NormalizeCatalog(bs []api.Backend) ([]api.Backend, error) {
	var errs *multierror.Error
	if len(bs) == 0 {
		errs = multierror.Append(errs, errors.New("the catalog has no backends"))
	}
	seen := map[string]bool{}
	out := make([]api.Backend, 0, len(bs))
	for i, b := range bs {
		where := fmt.Sprintf("backend %d (%q)", i, b.Name)
		if !bus.ValidToken(b.Name) {
			errs = multierror.Append(errs, fmt.Errorf("%s: name must be 1-64 letters, digits, '-' or '_'", where))
		} else if seen[b.Name] {
			errs = multierror.Append(errs, fmt.Errorf("%s: name is used twice", where))
		}
		seen[b.Name] = true
		if b.Kind == "" {
			b.Kind = KindCommand
			if slices.Contains([]string{KindReference, KindLlamaServer, KindVLLM}, b.Name) {
				b.Kind = b.Name
			}
		}
		switch b.Kind {
		case KindReference, KindLlamaServer, KindVLLM:
			if len(b.Command) == 0 {
				p, _ := program(b.Kind)
				b.Command = defaultCommand(b.Kind, p)
			}
		case KindCommand:
			if len(b.Command) == 0 {
				errs = multierror.Append(errs, fmt.Errorf("%s: kind command needs a command (an argv template)", where))
			}
		default:
			errs = multierror.Append(errs, fmt.Errorf("%s: unknown kind %q (reference, llama-server, vllm or command)", where, b.Kind))
		}
		if len(b.Command) > 0 {
			if b.Command[0] == "" {
				errs = multierror.Append(errs, fmt.Errorf("%s: command[0] must name a program", where))
			}
			if !slices.ContainsFunc(b.Command, func(a string) bool { return strings.Contains(a, "{port}") }) {
				errs = multierror.Append(errs, fmt.Errorf("%s: command must pass {port}: the hive chooses each worker's port", where))
			}
			for _, a := range b.Command {
				for _, p := range placeholderRE.FindAllString(a, -1) {
					if !slices.Contains(placeholders, strings.Trim(p, "{}")) {
						errs = multierror.Append(errs, fmt.Errorf("%s: unknown placeholder %s (known: {%s})", where, p, strings.Join(placeholders, "}, {")))
					}
				}
			}
		}
		if b.Parallel < -1 {
			errs = multierror.Append(errs, fmt.Errorf("%s: parallel must be -1 (no limit), 0 (from the command) or above, not %d", where, b.Parallel))
		}
		if b.HealthPath == "" {
			b.HealthPath = DefaultHealthPath
		}
		if !strings.HasPrefix(b.HealthPath, "/") {
			errs = multierror.Append(errs, fmt.Errorf("%s: health_path %q must start with /", where, b.HealthPath))
		}
		b.Command = slices.Clone(b.Command)
		out = append(out, b)
	}
	if err := errs.ErrorOrNil(); err != nil {
		return nil, err
	}
	return out, nil
}

// parallelFlags are the flags that set a built-in kind's concurrency.
var parallelFlags = map[string][]string{
	KindLlamaServer: {"--parallel", "-np"},
	KindVLLM:        {"--max-num-seqs"},
}

// Parallel is how many requests one worker of b serves at once, 0 for no
// limit: the catalog's setting, else the command's flag, else the kind's
// default. llama-server picks 4 slots by itself (-np -1, automatic), vLLM
// batches up to 256 sequences and the reference worker takes 4, as
// llama-server does; other commands are not limited by the hive.
func Parallel(b api.Backend) int {
	if b.Parallel != 0 {
		return max(b.Parallel, 0)
	}
	for i, a := range b.Command {
		for _, f := range parallelFlags[b.Kind] {
			v, ok := strings.CutPrefix(a, f+"=")
			if !ok && a == f && i+1 < len(b.Command) {
				v, ok = b.Command[i+1], true
			}
			if n, err := strconv.Atoi(v); ok && err == nil && n > 0 {
				return n
			}
		}
	}
	switch b.Kind {
	case KindLlamaServer:
		return 4
	case KindVLLM:
		return 256
	case KindReference:
		return 4
	}
	return 0
}

// vars are the values of one spawn's placeholders.
type vars struct {
	model, modelID, host string
	port, ctx            int
	gpus                 []int
}

// expand fills the placeholders of an argv template. Each argument stays
// one argument: nothing is split or passed through a shell.
func expand(tmpl []string, v vars) []string {
	gpus := make([]string, len(v.gpus))
	for i, g := range v.gpus {
		gpus[i] = strconv.Itoa(g)
	}
	r := strings.NewReplacer(
		"{model}", v.model, "{model_id}", v.modelID, "{host}", v.host,
		"{port}", strconv.Itoa(v.port), "{ctx}", strconv.Itoa(v.ctx), "{gpus}", strings.Join(gpus, ","),
	)
	out := make([]string, len(tmpl))
	for i, a := range tmpl {
		out[i] = r.Replace(a)
	}
	return out
}
