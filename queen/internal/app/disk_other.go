//go:build !unix

package app

import "errors"

// diskSize is not known here: --narration-max-bytes must be given.
func diskSize(string) (int64, error) {
	return 0, errors.New("disk size is not available on this platform")
}
