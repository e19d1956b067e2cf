package models

import (
	"errors"

	"rbee.dev/shared/api"
)

// Sentinel errors of the catalog. Callers test them with errors.Is; the
// messages that wrap them name the model and say what to do.
var (
	// ErrNotFound means the catalog holds no model of that id.
	ErrNotFound = errors.New("model not found")
	// ErrInvalidID means a model id is not one plain file name (see
	// api.ValidModelID).
	ErrInvalidID = errors.New("invalid model id")
	// ErrDownloading means the model is being downloaded right now, so it
	// cannot be deleted.
	ErrDownloading = errors.New("download in progress")
	// ErrExists means a model of that id is already in the catalog with a
	// different source or checksum than the download asked for.
	ErrExists = errors.New("model id taken")
	// ErrChecksum means a downloaded file did not match its expected sha256.
	ErrChecksum = errors.New("sha256 mismatch")
	// ErrNoSpace means the models directory lacks the room for a download
	// while keeping Options.MinFreeDisk free.
	ErrNoSpace = errors.New("not enough disk space")
	// ErrTooLarge means a model is larger than Options.MaxModelBytes, as
	// its source states or as its body turned out to be.
	ErrTooLarge = errors.New("model too large")
	// ErrSource means a source could not be understood or resolved; the
	// wrapping message says why.
	ErrSource = errors.New(api.BadSource)
)
