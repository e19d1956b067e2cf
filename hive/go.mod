module rbee.dev/hive

go 1.26.0

require (
	github.com/hashicorp/go-multierror v1.1.1
	github.com/nats-io/nats.go v1.55.0
	rbee.dev/shared v0.0.0-00010101000000-000000000000
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace rbee.dev/shared => ../shared
