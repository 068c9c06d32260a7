package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"

	"github.com/agentopia/dtma"
)

func TestTimeoutSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want int
	}{
		{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {time.Second, 1},
		{1500 * time.Millisecond, 2}, {10 * time.Second, 10},
	} {
		if got := timeoutSeconds(tc.in); got != tc.want {
			t.Errorf("timeoutSeconds(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseTime(t *testing.T) {
	if got := parseTime("0001-01-01T00:00:00Z"); !got.IsZero() || got != (time.Time{}) {
		t.Errorf("Docker's zero time parsed as %v, want time.Time{}", got)
	}
	if got := parseTime(""); got != (time.Time{}) {
		t.Errorf("empty parsed as %v", got)
	}
	want := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if got := parseTime("2024-05-06T07:08:09.123456789Z"); !got.Equal(want) {
		t.Errorf("parsed %v, want %v", got, want)
	}
}

func TestToEvent(t *testing.T) {
	ev := toEvent(events.Message{
		Type:   events.ContainerEventType,
		Action: events.ActionDie,
		Actor: events.Actor{ID: "abc", Attributes: map[string]string{
			"name": "dtma-x", "image": "img:1", "exitCode": "137", "execDuration": "3",
			dtma.LabelHost: "h1", dtma.LabelInstance: "x",
		}},
		Time:     1700000000,
		TimeNano: 1700000000123456789,
	})
	want := map[string]string{dtma.LabelHost: "h1", dtma.LabelInstance: "x"}
	if ev.ContainerID != "abc" || ev.Action != "die" || ev.ExitCode != 137 || fmt.Sprint(ev.Labels) != fmt.Sprint(want) {
		t.Errorf("toEvent = %+v, want id abc, die, exit 137, labels %v", ev, want)
	}
	if !ev.Time.Equal(time.Unix(0, 1700000000123456789)) {
		t.Errorf("time = %v", ev.Time)
	}
	if ev := toEvent(events.Message{Action: "start", Time: 1700000000}); !ev.Time.Equal(time.Unix(1700000000, 0)) || ev.ExitCode != 0 {
		t.Errorf("second-resolution event = %+v", ev)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{cerrdefs.ErrNotFound.WithMessage("No such container: x"), dtma.ENOTFOUND},
		{cerrdefs.ErrConflict.WithMessage("name in use"), dtma.ECONFLICT},
		{cerrdefs.ErrAlreadyExists, dtma.ECONFLICT},
		{cerrdefs.ErrInvalidArgument, dtma.EINVALID},
		{cerrdefs.ErrUnavailable, dtma.EUNAVAILABLE},
		{context.DeadlineExceeded, dtma.EUNAVAILABLE},
		{errors.New("boom"), dtma.EINTERNAL},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestPullFailure(t *testing.T) {
	refused := []error{
		cerrdefs.ErrNotFound.WithMessage("manifest for x:1 not found"),
		cerrdefs.ErrUnauthenticated,
		errors.New("manifest unknown: manifest unknown"),
		errors.New("pull access denied for x, repository does not exist or may require 'docker login'"),
	}
	for _, err := range refused {
		if kind, code := pullFailure(err, "x:1"); code != dtma.EINVALID || strings.Contains(kind, "docker") {
			t.Errorf("pullFailure(%v) = %q, %q; want invalid", err, kind, code)
		}
	}
	for _, tc := range []struct {
		err   error
		image string
	}{
		{errors.New(`Get "https://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`), "127.0.0.1:1/x:1"},
		{errors.New("net/http: TLS handshake timeout"), "x:1"},
		{errors.New(`Get "https://ghcr.io/v2/a/denied-notfound/manifests/1": EOF`), "ghcr.io/a/denied-notfound:1"},
		{errors.New(`received unexpected HTTP status: 500 Internal Server Error <html>secret internal page</html>`), "x:1"},
	} {
		kind, code := pullFailure(tc.err, tc.image)
		if code != dtma.EUNAVAILABLE || !strings.Contains(kind, "registry") || strings.Contains(kind, "secret") {
			t.Errorf("pullFailure(%v) = %q, %q; want unavailable, about the registry, no echo", tc.err, kind, code)
		}
	}
}

func TestPullStreamError(t *testing.T) {
	ok := `{"status":"Pulling from x"}` + "\n" + `{"status":"Digest: sha256:ab"}` + "\n"
	if err := pullStreamError(strings.NewReader(ok), nil); err != nil {
		t.Errorf("clean stream: %v", err)
	}
	bad := `{"status":"Pulling from x"}` + "\n" + `{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}` + "\n"
	if err := pullStreamError(strings.NewReader(bad), nil); err == nil || err.Error() != "manifest unknown" {
		t.Errorf("errorDetail stream: %v", err)
	}
	legacy := `{"error":"old style"}`
	if err := pullStreamError(strings.NewReader(legacy), nil); err == nil || err.Error() != "old style" {
		t.Errorf("error-only stream: %v", err)
	}
	if err := pullStreamError(strings.NewReader(`{"status":`), nil); err == nil {
		t.Error("truncated stream: no error")
	}
}

func TestRedactEnv(t *testing.T) {
	cause := cerrdefs.ErrInvalidArgument.WithMessage("invalid environment variable: =topsecret")
	err := redactEnv(&dtma.Error{Code: dtma.EINVALID, Message: "create c: invalid environment variable: =topsecret", Err: cause},
		map[string]string{"": "topsecret", "EMPTY": ""})
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("redacted error still reveals the value: %v", err)
	}
	if !strings.Contains(err.Error(), "[redacted]") || dtma.ErrorCode(err) != dtma.EINVALID {
		t.Errorf("redacted error = %v (code %s)", err, dtma.ErrorCode(err))
	}
	if !cerrdefs.IsInvalidArgument(err) {
		t.Error("redaction lost the cause's kind")
	}
}
