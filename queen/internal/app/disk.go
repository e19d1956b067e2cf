package app

import (
	"fmt"
	"os"
	"path/filepath"
)

// Bounds of the narration stream when --narration-max-bytes is not given:
// a tenth of the data disk, at most 50 GiB, at least 64 MiB.
const (
	narrationDiskShare = 10 // percent
	narrationMaxAuto   = 50 << 30
	narrationMinAuto   = 64 << 20
)

// storeHeadroom is what the embedded server may hold beyond narration: job
// records, work queues, keys. They age out with retention; most are small,
// but an inference's record carries its request body (up to 2 MiB encoded).
const storeHeadroom = 1 << 30

// narrationLimit is the narration stream's bound: the configured one, else
// a tenth of the disk under dir, at most 50 GiB. auto reports the second.
func narrationLimit(configured int64, dir string) (limit int64, auto bool, err error) {
	if configured > 0 {
		return configured, false, nil
	}
	size, err := diskSize(existing(dir))
	if err != nil {
		return 0, true, fmt.Errorf("size of the disk under %s (set --narration-max-bytes): %w", dir, err)
	}
	return min(max(size/100*narrationDiskShare, narrationMinAuto), narrationMaxAuto), true, nil
}

// existing is dir, or its nearest ancestor that exists: the disk a data
// dir not yet made will be on.
func existing(dir string) string {
	dir, _ = filepath.Abs(dir)
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}
