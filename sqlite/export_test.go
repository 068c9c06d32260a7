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

// CacheSizes returns PRAGMA cache_size as the writer's and a reader's
// connection see it (for the package's tests).
func (r *Registry) CacheSizes() (writer, reader int, err error) {
	if err = r.w.QueryRow("PRAGMA cache_size").Scan(&writer); err != nil {
		return 0, 0, err
	}
	err = r.r.QueryRow("PRAGMA cache_size").Scan(&reader)
	return writer, reader, err
}
