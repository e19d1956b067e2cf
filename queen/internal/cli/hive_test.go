package cli_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"rbee.dev/shared/api"
)

var testInventory = api.Inventory{
	Hostname: "gpu-box", OS: "linux", Arch: "amd64",
	CPU:  api.CPU{Cores: 16, Load1: 0.5},
	RAM:  api.Memory{TotalBytes: 64 << 30, FreeBytes: 48 << 30},
	Disk: api.Disk{Path: "/var/lib/rbee", TotalBytes: 1 << 40, FreeBytes: 512 << 30},
	GPUs: []api.GPU{{Index: 0, Name: "NVIDIA H200", MemTotalBytes: 140 << 30, MemFreeBytes: 139 << 30, UtilPercent: 3, TemperatureC: 41, PowerWatts: 120}},
}

func TestHiveList(t *testing.T) {
	q := newFakeQueen(t)
	q.hives = []api.Hive{
		{ID: "h1", Slots: 4, SlotsFree: 1, AllowRun: true, HeartbeatAt: time.Now().Add(-2 * time.Second), Inventory: testInventory},
		{ID: "h2", Slots: 1, SlotsFree: 1, HeartbeatAt: time.Now(), Inventory: api.Inventory{CPU: api.CPU{Cores: 2}, RAM: api.Memory{TotalBytes: 512 << 20}}},
	}
	r := q.run(t, "hive", "ls")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID SLOTS FREE/TOTAL GPUS CPU CORES RAM ALLOW RUN LAST HEARTBEAT" {
		t.Fatalf("table:\n%s", r.stdout)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); !strings.HasPrefix(got, "h1 1/4 1 16 64.0 GiB yes 2") || !strings.HasSuffix(got, "s ago") {
		t.Errorf("h1 row %q", got)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); !strings.HasPrefix(got, "h2 1/1 0 2 512.0 MiB no ") {
		t.Errorf("h2 row %q", got)
	}
	r = q.run(t, "--json", "hive", "ls")
	r.want(t, 0)
	var list api.HiveList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Hives) != 2 || list.Hives[0].Inventory.GPUs[0].Name != "NVIDIA H200" {
		t.Fatalf("--json %q: %v", r.stdout, err)
	}
}

func TestHiveStatus(t *testing.T) {
	nested := map[string]any{"id": "h1", "version": "1.2", "slots": 4, "slots_free": 3, "allow_run": true, "inventory": testInventory,
		"models": []map[string]any{{"model_id": "llama-3"}, {"model_id": "qwen"}}, "workers": []any{}}
	for name, data := range map[string]any{"flat inventory": testInventory, "nested inventory": nested} {
		t.Run(name, func(t *testing.T) {
			q := newFakeQueen(t)
			q.script = func(j *fakeJob) {
				j.narrate("started", "")
				j.emit(api.SSEData, api.Event{Actor: "hive-a", Action: "hive_status", Data: data})
				j.end(api.StateDone, nil, "")
			}
			r := q.run(t, "hive", "status", "h1")
			r.want(t, 0)
			wants := []string{
				"host gpu-box (linux/amd64)",
				"cpu 16 cores, load 0.50",
				"ram 48.0 GiB free of 64.0 GiB",
				"disk 512.0 GiB free of 1.0 TiB (/var/lib/rbee)",
				"gpus 1",
				"gpu 0 NVIDIA H200, 139.0 GiB free of 140.0 GiB, 3% busy, 41°C, 120 W",
			}
			if name == "nested inventory" {
				wants = append(wants, "hive h1 (version 1.2)", "slots 3 free of 4", "allow run yes", "models 2: llama-3, qwen")
			} else {
				wants = append(wants, "hive h1")
			}
			// Compare words, not the alignment tabwriter chose.
			var got []string
			for _, l := range strings.Split(r.stdout, "\n") {
				got = append(got, strings.Join(strings.Fields(l), " "))
			}
			for _, want := range wants {
				if !slices.Contains(got, want) {
					t.Errorf("output lacks %q:\n%s", want, r.stdout)
				}
			}
			creates, _, _ := q.snapshot()
			if creates[0].req.Operation != api.OpHiveStatus || creates[0].req.Hive != "h1" {
				t.Errorf("request %+v", creates[0].req)
			}

			r = q.run(t, "--json", "hive", "status", "h1")
			r.want(t, 0)
			want, _ := json.Marshal(data)
			if strings.TrimSpace(r.stdout) != string(want) {
				t.Errorf("--json %s, want %s", r.stdout, want)
			}
		})
	}
}

func TestHiveStatusFails(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) { j.end(api.StateFailed, nil, "hive h9 is not connected") }
	r := q.run(t, "hive", "status", "h9")
	r.want(t, 1)
	if r.stdout != "" || r.stderr != "rbee: job job-1 failed: hive h9 is not connected\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	q.script = nil
	r = q.run(t, "hive", "status", "h9")
	r.want(t, 1)
	if r.stderr != "rbee: job job-2 ended without a result\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func checkScript(n int, payload int) func(j *fakeJob) {
	return func(j *fakeJob) {
		j.narrate("started", "")
		for i := 0; i < n; i++ {
			j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "check", Payload: strings.Repeat("x", payload)})
		}
		j.end(api.StateDone, nil, "")
	}
}

func TestCheck(t *testing.T) {
	q := newFakeQueen(t)
	q.script = checkScript(20, 64)
	r := q.run(t, "check", "--hive", "h1", "--events", "20", "--payload-bytes", "64")
	r.want(t, 0)
	for _, want := range []string{"job      job-1 done\n", "events   22 received, in order\n", "elapsed  ", " events/s\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stdout)
		}
	}
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpHiveCheck || req.Hive != "h1" || *req.Payload.(*api.HiveCheck).Events != 20 || req.Payload.(*api.HiveCheck).PayloadBytes != 64 {
		t.Errorf("request %+v", req)
	}

	r = q.run(t, "--json", "check")
	r.want(t, 0)
	var sum struct {
		JobID      string  `json:"job_id"`
		State      string  `json:"state"`
		Events     int     `json:"events"`
		InOrder    bool    `json:"in_order"`
		ElapsedS   float64 `json:"elapsed_s"`
		EventsPerS float64 `json:"events_per_s"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("--json %q: %v", r.stdout, err)
	}
	if sum.JobID != "job-2" || sum.State != api.StateDone || sum.Events != 22 || !sum.InOrder || sum.ElapsedS <= 0 || sum.EventsPerS <= 0 {
		t.Errorf("summary %+v", sum)
	}
	// Without --events the queen's default applies, so none is sent.
	if creates, _, _ = q.snapshot(); *creates[1].req.Payload.(*api.HiveCheck).Events != api.DefaultCheckEvents {
		t.Errorf("events %d, want the default", *creates[1].req.Payload.(*api.HiveCheck).Events)
	}
}

func TestCheckOutOfOrder(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) {
		j.narrate("started", "")
		j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "check", Seq: 2})
		j.end(api.StateDone, nil, "")
	}
	r := q.run(t, "check")
	r.want(t, 1)
	if !strings.Contains(r.stdout, "OUT OF ORDER") || r.stderr != "rbee: job job-1: events arrived out of order\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}
