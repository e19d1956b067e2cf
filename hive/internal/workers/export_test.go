package workers

// Abandon ends s the way a crashed hive ends: the goroutines that follow
// its workers stop, but the worker processes keep running and the state
// file keeps their records, for another supervisor on the same data dir
// to find.
func Abandon(s *Supervisor) {
	s.cancel()
	s.wg.Wait()
}
