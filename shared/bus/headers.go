package bus

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// Headers of narration frames. Whatever routes, fences or orders a frame
// travels here, so readers never scan a body to decide what to do with it.
// The writer and kind repeat the subject's tokens; a reader checks that they
// agree, because the subject is what NATS permissions hold a hive to.
const (
	// HeaderSeq is the event's sequence within its job, from 1.
	HeaderSeq = "Rbee-Seq"
	// HeaderAttempt is the attempt of the job the event belongs to, from 1.
	HeaderAttempt = "Rbee-Attempt"
	// HeaderWriter is who wrote the event: a hive id or QueenWriter.
	HeaderWriter = "Rbee-Writer"
	// HeaderKind is the event's kind: KindEvent, KindStart, KindData or
	// KindEnd.
	HeaderKind = "Rbee-Kind"
	// HeaderHive is set on the queen's events that hand an attempt to a
	// hive (job created, placed, re-placed): readers accept a hive's
	// narration only for the attempts these events gave it.
	HeaderHive = "Rbee-Hive"
)

// OperationHeader carries a dispatched job's operation, so a hive can tell
// which of its capacities (job slots or inference slots) a message takes
// without reading the body. A dispatch without it takes a job slot.
const OperationHeader = "Rbee-Operation"

// Meta is what a narration frame's subject and headers say about it.
type Meta struct {
	Job     string
	Writer  string
	Kind    string
	Seq     uint64
	Attempt int
	// Hive is the hive an attempt is handed to, on the queen's placing
	// events only.
	Hive string
}

// Subject is where the frame is stored: an end in its attempt's end slot.
func (m Meta) Subject() string {
	if m.Kind == KindEnd {
		return NarrEndSubject(m.Job, m.Writer, m.Attempt)
	}
	return Narr(m.Job, m.Writer, m.Kind)
}

// Msg is the frame carrying data, with its headers set.
func (m Meta) Msg(data []byte) *nats.Msg {
	// One backing array for every value: a hive sends one of these per
	// narration event.
	v := &[5]string{strconv.FormatUint(m.Seq, 10), strconv.Itoa(max(m.Attempt, 1)), m.Writer, m.Kind, m.Hive}
	h := make(nats.Header, 5)
	h[HeaderSeq], h[HeaderAttempt], h[HeaderWriter], h[HeaderKind] = v[0:1:1], v[1:2:2], v[2:3:3], v[3:4:4]
	if m.Hive != "" {
		h[HeaderHive] = v[4:5:5]
	}
	return &nats.Msg{Subject: m.Subject(), Header: h, Data: data}
}

// Why ParseMeta refuses a frame.
const (
	// BadSubject: the subject is not a narration subject.
	BadSubject = "subject"
	// BadHeaders: a header is missing, malformed or disagrees with the
	// subject.
	BadHeaders = "headers"
	// BadSeq: the job sequence is 0.
	BadSeq = "seq"
)

// ParseMeta reads a stored frame's subject and headers (ReadHeaders). On
// failure it returns what it read and why.
func ParseMeta(subj string, h nats.Header) (Meta, string) {
	var m Meta
	var ok bool
	if m.Job, m.Writer, m.Kind, ok = ParseNarr(subj); !ok {
		return m, BadSubject
	}
	if m.Kind == KindEnd {
		m.Attempt = EndAttempt(subj)
	}
	return m, m.ReadHeaders(h)
}

// ReadHeaders completes m, whose job, writer and kind (and an end's
// attempt) its subject gave, from a frame's headers. It checks every claim
// it can without knowing the job: the headers' writer and kind are the
// subject's, the sequence is a positive number, the attempt a reasonable
// one (an end's attempt is its subject's, whatever the header says,
// because the subject is its one-end slot), and a placing hive a valid
// token. What it cannot check, who may write which attempt, is the
// reader's to judge. It returns why it refuses the headers, "" if it
// does not.
func (m *Meta) ReadHeaders(h nats.Header) string {
	if h.Get(HeaderWriter) != m.Writer || h.Get(HeaderKind) != m.Kind {
		return BadHeaders
	}
	seq, err := strconv.ParseUint(h.Get(HeaderSeq), 10, 63)
	if err != nil {
		return BadHeaders
	}
	m.Seq = seq
	if m.Kind != KindEnd {
		m.Attempt = 1
		if a := h.Get(HeaderAttempt); a != "" {
			n, err := strconv.ParseUint(a, 10, 31)
			if err != nil {
				return BadHeaders
			}
			m.Attempt = int(n)
		}
	}
	m.Attempt = max(m.Attempt, 1)
	m.Hive = ""
	if hive := h.Get(HeaderHive); hive != "" {
		if !ValidToken(hive) {
			return BadHeaders
		}
		m.Hive = hive
	}
	if m.Seq == 0 {
		return BadSeq
	}
	return ""
}

// HeaderSeqOf is the job sequence a stored frame's header carries, and
// whether it carries one.
func HeaderSeqOf(h nats.Header) (uint64, bool) {
	v := h.Get(HeaderSeq)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 63)
	return n, err == nil
}
