// Command ticker prints "tick I of N" every interval and exits 0: the slow,
// chatty command the end-to-end suite runs with the run operation. The hive
// images hold no shell or sleep, so the suite builds this statically and
// mounts it into the hive containers (compose.e2e.yml).
//
//	ticker [-n 100] [-every 100ms]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	n := flag.Int("n", 100, "lines to print")
	every := flag.Duration("every", 100*time.Millisecond, "pause before each line")
	flag.Parse()
	for i := 1; i <= *n; i++ {
		time.Sleep(*every)
		if _, err := fmt.Printf("tick %d of %d\n", i, *n); err != nil {
			os.Exit(1)
		}
	}
}
