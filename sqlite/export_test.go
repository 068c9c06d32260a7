package sqlite

// SchemaVersion returns the newest schema version this binary knows (for
// the package's tests).
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}
