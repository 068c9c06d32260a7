package http

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/agentopia/dtma"
)

// ndjson is the media type of a deploy answered line by line.
const ndjson = "application/x-ndjson"

// deployStream answers POST /v1/instances as application/x-ndjson once
// the deploy reports pull progress: a DeployEvent per progress message,
// flushed at once, and the outcome as the last line. A deploy that pulls
// nothing (or fails before its pull) is answered as without the Accept
// header, with its real status. The status of a streamed answer is 200;
// the outcome's own status is in its last line.
type deployStream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	enc     *json.Encoder
	started bool
}

// newDeployStream returns a stream when the request accepts ndjson, else nil.
func newDeployStream(w http.ResponseWriter, r *http.Request) *deployStream {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == ndjson {
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			return &deployStream{w: w, enc: enc}
		}
	}
	return nil
}

// progress writes one progress line (the first one starts the answer).
// Write errors (a client gone) are ignored: the deploy goes on.
func (d *deployStream) progress(p dtma.PullProgress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.start()
	_ = d.enc.Encode(DeployEvent{Progress: &p})
	d.flush()
}

func (d *deployStream) start() {
	if d.started {
		return
	}
	d.started = true
	d.w.Header().Set("Content-Type", ndjson)
	d.w.Header().Set("X-Content-Type-Options", "nosniff")
	d.w.WriteHeader(http.StatusOK)
}

func (d *deployStream) flush() {
	if f, ok := d.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish writes the outcome line: the instance, or the error as the v1
// error body would carry it.
func (d *deployStream) finish(inst *dtma.Instance, created bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.start()
	ev := DeployEvent{}
	if err != nil {
		code := dtma.ErrorCode(err)
		ev.Status = statusOf(code)
		ev.Error = &ErrorDetail{Code: code, Message: dtma.ErrorMessage(err), Field: dtma.ErrorField(err)}
	} else {
		wire := NewInstance(inst)
		ev.Instance, ev.Created, ev.Status = &wire, created, http.StatusOK
		if created {
			ev.Status = http.StatusCreated
		}
	}
	_ = d.enc.Encode(ev)
	d.flush()
}
