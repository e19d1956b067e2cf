package relay

// checkBody reports whether b is an event body that a client may be sent
// for a frame whose headers claim job, seq and attempt: one JSON object
// (scanEvent) whose job_id and seq are those claims, and whose attempt,
// absent meaning 1, is too. Every event carries its sequence, which is
// never 0. The relay decides by the headers; the body,
// which clients are sent as it is, must not tell them another story.
func checkBody(b []byte, job string, seq uint64, attempt int) bool {
	var ev frameEvent
	return seq > 0 && scanEvent(b, &ev) && string(ev.JobID) == job && ev.Seq == seq && max(ev.Attempt, 1) == attempt
}
