// Package deploycheck holds no code, only tests: they keep the Prometheus
// and Grafana configuration under deploy/ honest against the binaries. The
// configs must pass promtool, every metric a dashboard or alert names must
// be one a live queen or hive exports, and a real Prometheus must scrape a
// real queen and hive with them.
//
// promtool and prometheus come from the Debian package (apt-get install
// prometheus). Without them the tests that need them skip, except when CI
// is "true", where they fail.
package deploycheck
