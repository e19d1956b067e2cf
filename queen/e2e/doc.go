// Package e2e holds no code, only the end-to-end suite, behind the e2e
// build tag: it brings up docker-compose.yml (three clustered NATS servers,
// two queens, two hives) from the images `make images` builds, runs jobs
// through both queens, and breaks the cluster while they run (a hive
// killed, a NATS server killed, a queen restarted, a hive cut off the
// network), checking after each that every job ended and every stream was
// delivered whole: each event once, in order, and exactly one end.
//
//	make e2e
//
// or, with the images built, go test -tags e2e -v rbee.dev/queen/e2e.
// RBEE_COMPOSE chooses the compose command ("docker compose" when it
// works, else docker-compose); RBEE_E2E_PROJECT names the compose project.
package e2e
