// Package e2e holds the end-to-end tests: they build the real dtma binary,
// run it against the real Docker daemon (and a real PostgreSQL where the
// test says so) and talk to it over HTTP. Every container they cause carries
// the label dtma.test=<run id> and is removed by that label and the test
// agent's dtma.host label.
package e2e
