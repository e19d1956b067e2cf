//go:build !linux

package inventory

import "rbee.dev/shared/api"

// Hives run on Linux. Elsewhere the package still builds, so the hive can
// be compiled and its tests run on a developer's laptop, but CPU load, RAM
// and disk read as zero: the heartbeat goes on, just with less to say.

func load1() float64 { return 0 }

func memory() api.Memory { return api.Memory{} }

func diskSpace(string) (total, free uint64) { return 0, 0 }
