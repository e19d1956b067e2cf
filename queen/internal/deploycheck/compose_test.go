package deploycheck_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every container runs an init as PID 1 (docker's tini, `init: true`): the
// images are FROM scratch, and without one a `run` command's orphans,
// reparented to PID 1, would never be reaped, and signals would reach the
// binary as PID 1, which the kernel spares from default actions.
func TestComposeServicesRunInit(t *testing.T) {
	for _, file := range []string{filepath.Join(root, "docker-compose.yml"), deployPath("compose", "hive-gpu.yml")} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			services, anchors := composeBlocks(string(data))
			if len(services) == 0 {
				t.Fatal("no services found")
			}
			for name, lines := range services {
				if !hasInit(lines, anchors) {
					t.Errorf("service %s lacks init: true", name)
				}
			}
		})
	}
}

// composeBlocks splits a compose file into its services' lines (keyed by
// service) and its anchored top-level blocks' lines (keyed by anchor). It
// reads the two-space layout these files use, not YAML at large.
func composeBlocks(data string) (services, anchors map[string][]string) {
	services, anchors = map[string][]string{}, map[string][]string{}
	var top, cur string
	for _, line := range strings.Split(data, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case indent == 0:
			top, cur = strings.TrimSuffix(strings.Fields(trimmed)[0], ":"), ""
			if _, anchor, ok := strings.Cut(trimmed, "&"); ok {
				cur = "&" + strings.TrimSpace(anchor)
				anchors[cur[1:]] = nil
			}
		case top == "services" && indent == 2:
			cur = strings.TrimSuffix(trimmed, ":")
			services[cur] = nil
		case strings.HasPrefix(cur, "&"):
			if indent == 2 {
				anchors[cur[1:]] = append(anchors[cur[1:]], trimmed)
			}
		case top == "services" && cur != "" && indent == 4:
			services[cur] = append(services[cur], trimmed)
		}
	}
	return services, anchors
}

// hasInit reports whether a service's own keys, or those it merges from an
// anchor, set init: true.
func hasInit(lines []string, anchors map[string][]string) bool {
	for _, l := range lines {
		if l == "init: true" {
			return true
		}
		if a, ok := strings.CutPrefix(l, "<<: *"); ok && hasInit(anchors[a], nil) {
			return true
		}
	}
	return false
}
