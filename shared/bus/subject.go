// Package bus is the NATS protocol that the queen and the hive both speak:
// every subject, stream, consumer and bucket name (so that permissions,
// tests and code agree on one spelling), the headers that route and fence
// narration, the narration publisher, the dispatch message, the cancel
// request and reply, and the connection options both sides need. It imports
// nats.go and nothing of rbee's own, so neither side can pull the other in
// through it.
//
// Narration subjects are narr.<job>.<writer>.<kind>: the job id first so a
// reader can filter one job, the writer (a hive id or "queen") second so a
// hive's NATS permissions can be limited to narr.*.<hive>.>, and the kind
// last so the SSE relay and the state applier can tell events apart without
// decoding payloads. End events carry the job's attempt as a fifth token,
// narr.<job>.<writer>.end.<attempt>: each attempt has its own one-end slot,
// so a lost hive's late end can never take the place of a re-placed
// attempt's end.
package bus

import (
	"strconv"
	"strings"
)

// Stream, bucket and consumer names.
const (
	// NarrStream holds every job's narration, one subject per job and writer.
	NarrStream = "NARR"
	// DispatchStream is the work queue of jobs waiting for their hive.
	DispatchStream = "DISPATCH"
	// JobsBucket maps a job id to its record; only queens write it.
	JobsBucket = "jobs"
	// HivesBucket maps a hive id to its last heartbeat; keys expire by TTL.
	HivesBucket = "hives"
	// IdempotencyBucket maps a hashed Idempotency-Key to the job it created.
	IdempotencyBucket = "idempotency"
	// KeysBucket maps an API key id to its name, scopes and secret's hash.
	KeysBucket = "keys"
	// LimitsBucket holds API keys' rate-limit counters: requests and tokens
	// per minute and running requests' leases.
	LimitsBucket = "limits"
	// ApplierConsumer is the durable consumer, shared by all queens, that
	// turns start and end narration into job record updates.
	ApplierConsumer = "applier"
	// UsageStream is the usage ledger: one message per finished inference
	// job, on usage.<key>.<job>.
	UsageStream = "USAGE"
	// QueenWriter is the writer token the queen uses in narration subjects.
	QueenWriter = "queen"
)

// Narration kinds, the last token of a narration subject.
const (
	KindEvent = "ev"    // a narration line
	KindStart = "start" // the hive began the work; the job is running
	KindData  = "data"  // a structured result
	KindEnd   = "end"   // the one terminal event of a job
)

// Subject prefixes and wildcards.
const (
	NarrAll     = "narr.>"
	DispatchAll = "dispatch.hive.*"
	// NarrStartAll and NarrEndAll are the applier consumer's filters.
	NarrStartAll = "narr.*.*." + KindStart
	NarrEndAll   = "narr.*.*." + KindEnd + ".*"
)

// LiveAll is where the narration stream republishes each message once it
// is stored, with its stream sequence in the Nats-Sequence header: a
// queen follows live only the jobs its clients follow, each on its own
// subject, instead of reading every job's narration.
const LiveAll = "live." + NarrAll

// LiveJob matches the republished narration of one job.
func LiveJob(job string) string { return "live." + NarrJob(job) }

// FromLive is the narration subject a republished message was stored on.
func FromLive(subj string) (string, bool) { return strings.CutPrefix(subj, "live.") }

// UsageAll matches every usage record.
const UsageAll = "usage.>"

// Usage is the subject of one job's usage record, filed under the key that
// created the job; each subject holds at most one message.
func Usage(key, job string) string { return "usage." + key + "." + job }

// UsageKey matches every usage record of one key.
func UsageKey(key string) string { return "usage." + key + ".*" }

// Narr is the subject one writer uses for one kind of a job's narration.
func Narr(job, writer, kind string) string {
	return "narr." + job + "." + writer + "." + kind
}

// NarrJob matches every narration subject of one job.
func NarrJob(job string) string { return "narr." + job + ".>" }

// NarrJobWriter matches everything one writer stored for one job.
func NarrJobWriter(job, writer string) string { return "narr." + job + "." + writer + ".>" }

// NarrEnd matches the end subjects of one attempt of a job, whoever wrote
// them. Publishing an end with an expected last sequence of 0 on this filter
// stores at most one.
func NarrEnd(job string, attempt int) string {
	return "narr." + job + ".*." + KindEnd + "." + strconv.Itoa(max(attempt, 1))
}

// NarrEndAny matches every end of a job, of any attempt.
func NarrEndAny(job string) string { return "narr." + job + ".*." + KindEnd + ".*" }

// NarrEndSubject is where writer publishes the end of an attempt.
func NarrEndSubject(job, writer string, attempt int) string {
	return "narr." + job + "." + writer + "." + KindEnd + "." + strconv.Itoa(max(attempt, 1))
}

// NarrWriter matches everything one writer may publish.
func NarrWriter(writer string) string { return "narr.*." + writer + ".>" }

// ParseNarr splits a narration subject into its job, writer and kind.
func ParseNarr(subj string) (job, writer, kind string, ok bool) {
	rest, found := strings.CutPrefix(subj, "narr.")
	if !found {
		return "", "", "", false
	}
	job, rest, found = strings.Cut(rest, ".")
	if !found {
		return "", "", "", false
	}
	writer, kind, found = strings.Cut(rest, ".")
	if !found {
		return "", "", "", false
	}
	if k, attempt, isEnd := strings.Cut(kind, "."); isEnd {
		if k != KindEnd || strings.Contains(attempt, ".") {
			return "", "", "", false
		}
		kind = KindEnd
	}
	return job, writer, kind, true
}

// EndAttempt is the attempt an end subject belongs to, 0 for other subjects.
func EndAttempt(subj string) int {
	i := strings.LastIndexByte(subj, '.')
	if i < 0 || !strings.HasSuffix(subj[:i], "."+KindEnd) {
		return 0
	}
	n, err := strconv.Atoi(subj[i+1:])
	if err != nil {
		return 0
	}
	return n
}

// DirectGetLast is the JetStream API subject that answers the newest
// message of stream on subjects matching filter, without a stream lookup
// first; NATS permissions can allow it per filter.
func DirectGetLast(stream, filter string) string {
	return "$JS.API.DIRECT.GET." + stream + "." + filter
}

// Dispatch is the work-queue subject of one hive.
func Dispatch(hive string) string { return "dispatch.hive." + hive }

// DispatchConsumer is the durable consumer name of one hive.
func DispatchConsumer(hive string) string { return "hive-" + hive }

// Cancel is the core NATS subject on which a hive takes cancel requests.
func Cancel(hive string) string { return "ctl.hive." + hive + ".cancel" }

// Inbox is the reply-inbox prefix of one hive's connection; NATS
// permissions let a hive subscribe to its own inboxes only.
func Inbox(hive string) string { return "_INBOX_" + hive }

// ValidToken reports whether s can be used as one subject token and as a KV
// key: ASCII letters, digits, '-' and '_', 1 to 64 characters.
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
