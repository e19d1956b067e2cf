package workers

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// StateFile is the name of the supervisor's state file under
// <data dir>/workers.
const StateFile = "state.json"

// record is one worker as the state file keeps it: enough to find its
// process again after the hive restarts, and to restart it if it later
// crashes.
type record struct {
	Worker api.Worker `json:"worker"`
	// PGID is the worker's process group; PID is in Worker.
	PGID int `json:"pgid"`
	// StartTicks is the process's start time, so that a pid reused by an
	// unrelated process is not mistaken for the worker.
	StartTicks uint64      `json:"start_ticks,omitempty"`
	Backend    api.Backend `json:"backend"`
	ModelPath  string      `json:"model_path"`
	Argv       []string    `json:"argv,omitempty"`
}

type stateFile struct {
	Workers []record `json:"workers"`
}

func (s *Supervisor) statePath() string { return filepath.Join(s.dir, StateFile) }

// persist writes every worker's record to the state file, atomically. Once
// the supervisor has ended it writes nothing: a graceful stop has already
// written the empty list, and an abandoned supervisor stands in for a hive
// that died.
func (s *Supervisor) persist() {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	st := stateFile{Workers: []record{}}
	s.mu.Lock()
	for _, w := range s.workers {
		st.Workers = append(st.Workers, record{
			Worker: w.snapshotLocked(), PGID: w.pgid, StartTicks: w.start,
			Backend: w.backend, ModelPath: w.modelPath, Argv: w.argv,
		})
	}
	s.mu.Unlock()
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].Worker.WorkerID < st.Workers[j].Worker.WorkerID })
	data, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		tmp := s.statePath() + ".tmp"
		if err = os.WriteFile(tmp, data, 0o644); err == nil {
			err = os.Rename(tmp, s.statePath())
		}
	}
	if err != nil {
		s.log.Warn("save worker state", "err", err)
	}
}

// recover settles the workers recorded by a previous run of the hive, in
// parallel, then rewrites the state file with those it adopted.
//
// An adopted worker is not this process's child, so it cannot be waited
// for: its supervision polls that its pid still runs (with the recorded
// start time) and checks its health, and a crash is handled like any other:
// the worker is restarted, from then on as a child. Its output still goes
// to its log file, which a pipe could not have survived.
func (s *Supervisor) recover() {
	data, err := os.ReadFile(s.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var st stateFile
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil {
		s.log.Warn("ignore unreadable worker state; workers of the previous run are not cleaned up", "err", err, "path", s.statePath())
		return
	}
	var wg sync.WaitGroup
	for _, r := range st.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); s.settle(r) }()
	}
	wg.Wait()
	s.persist()
}

// settle adopts one recorded worker if its process still runs and answers
// its health check; otherwise it kills what is left of it and forgets it.
// Workers recorded while starting are never adopted: the spawn that wanted
// them ended with the hive.
func (s *Supervisor) settle(r record) {
	id := r.Worker.WorkerID
	if !bus.ValidToken(id) {
		s.log.Warn("ignore a malformed worker record", "worker_id", id)
		return
	}
	pid := r.Worker.PID
	alive := processAlive(pid, r.StartTicks)
	reason := "its process is gone"
	if alive {
		reason = "it did not answer its health check"
		if r.Worker.State != api.WorkerReady && r.Worker.State != api.WorkerRestarting {
			reason = "it was " + r.Worker.State + " when the hive stopped"
		} else if r.PGID == pid && s.probe(s.ctx, r.Worker.URL+r.Backend.HealthPath, 2*time.Second) == 200 {
			s.adopt(r)
			return
		}
		s.terminate(s.watchPID(pid, r.StartTicks), r.PGID)
	} else if r.PGID > 1 && groupAlive(r.PGID) {
		// The leader is gone but members of its group remain. The kernel
		// does not hand out a pid while a group of that number exists,
		// so unless the number now names a new process (which would lead
		// a group of its own), the group is what the worker left behind.
		if _, reused := procInfo(r.PGID); !reused {
			_ = signalGroup(r.PGID, syscall.SIGKILL)
		}
	}
	_ = os.Remove(filepath.Join(s.dir, id+".log"))
	rec := r.Worker
	rec.State, rec.Error = api.WorkerStopped, "dropped after a hive restart: "+reason
	s.event(rec, EventDropped)
}

// adopt supervises a worker left running by a previous run of the hive.
func (s *Supervisor) adopt(r record) {
	w := s.newWorker(r.Worker.WorkerID, r.Backend, r.ModelPath, nil)
	w.rec = r.Worker
	w.rec.State, w.rec.Hive = api.WorkerReady, s.cfg.Hive
	w.pgid, w.start, w.argv = r.PGID, r.StartTicks, r.Argv
	w.logs.fromEnd()
	in := s.watchPID(r.Worker.PID, r.StartTicks)
	s.mu.Lock()
	s.workers[w.id] = w
	rec := w.snapshotLocked()
	s.wg.Add(2)
	s.mu.Unlock()
	go func() { defer s.wg.Done(); w.logs.run(s.ctx) }()
	go func() { defer s.wg.Done(); w.loop(in) }()
	s.event(rec, EventAdopted)
}
