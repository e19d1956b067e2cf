package api

import "fmt"

// BudgetFlag is the queen flag that sets each job's narration budget; the
// messages of both sides name it so a user knows which setting to change.
const BudgetFlag = "--job-max-narration-bytes"

// NarrationEstimate is the fewest narration bytes the request is known in
// advance to produce, 0 when that is not known (a command's output, say).
// hive_check stores at least its payload for every event.
func (r *JobRequest) NarrationEstimate() int64 {
	if e, ok := r.Payload.(interface{ narrationEstimate() int64 }); ok {
		return e.narrationEstimate()
	}
	return 0
}

// BudgetExceeded is the error a job ends with when its narration passed
// its budget of limit bytes.
func BudgetExceeded(limit int64) string {
	return fmt.Sprintf("narration budget of %s exceeded (%s)", FormatBytes(limit), BudgetFlag)
}
