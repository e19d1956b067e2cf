package relay

import "bytes"

// checkBody reports whether b is an event body that a client may be sent
// for a frame whose headers claim job, seq and attempt: one well-formed
// JSON object whose top-level "job_id" and "seq" are those claims, and
// whose "attempt", if any, is too (checkAttempt false: any). Every
// occurrence of a key must agree, so a repeated key, which JSON readers
// take the last of, cannot show clients another number than the one the
// relay fenced by. Top-level keys must be written without escapes, as
// encoders write them, for the same reason.
//
// It is scanEvent's twin for frames with headers: the relay decides by
// the headers, and only checks here that the body says the same, without
// keeping what it reads.
func checkBody(b []byte, job string, seq uint64, attempt int, checkAttempt bool) bool {
	s := scanner{b: b}
	s.ws()
	if !s.lit('{') {
		return false
	}
	var sawJob, sawSeq bool
	s.ws()
	if s.lit('}') {
		return false
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok || bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		s.ws()
		if !s.lit(':') {
			return false
		}
		s.ws()
		switch string(key) {
		case "job_id":
			var v []byte
			v, ok = s.str()
			ok = ok && string(v) == job
			sawJob = true
		case "seq":
			var n uint64
			n, ok = s.uint()
			ok = ok && n == seq
			sawSeq = true
		case "attempt":
			var n uint64
			n, ok = s.uint()
			ok = ok && (!checkAttempt || max(n, 1) == uint64(attempt))
		default:
			ok = s.skip(0)
		}
		if !ok {
			return false
		}
		s.ws()
		if s.lit('}') {
			return sawJob && sawSeq && s.end()
		}
		if !s.lit(',') {
			return false
		}
	}
}
