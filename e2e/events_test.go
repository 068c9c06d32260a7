package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

type sseEvent struct {
	ID    uint64
	Event string
	Data  dtmahttp.EventJSON
}

// streamEvents opens GET /v1/events on a and returns a channel of parsed
// events (closed when the stream ends) and a function that disconnects.
func streamEvents(t *testing.T, a *Agent, query, lastID string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", a.URL+"/v1/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+Token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/events: %d", resp.StatusCode)
	}
	out := make(chan sseEvent, 1000)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.Event != "" {
					out <- cur
				}
				cur = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				cur.ID, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				cur.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &cur.Data)
			}
		}
	}()
	return out, cancel
}

// nextUntil reads events until one satisfies match (cap 60 s) and returns
// everything read, that one last.
func nextUntil(t *testing.T, ch <-chan sseEvent, what string, match func(sseEvent) bool) []sseEvent {
	t.Helper()
	var got []sseEvent
	deadline := time.After(60 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended before %s; got %+v", what, got)
			}
			got = append(got, e)
			if match(e) {
				return got
			}
		case <-deadline:
			t.Fatalf("no %s within 60 s; got %+v", what, got)
		}
	}
}

// TestEventsStream: instance changes arrive as numbered SSE events in
// order — created, health, stop, removal; a reconnect with Last-Event-ID
// resumes after that id; ?instance= filters; a gone client is
// unsubscribed.
func TestEventsStream(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	rcWaitRelists(t, a, 1)
	all, closeAll := streamEvents(t, a, "", "")
	defer closeAll()
	only, closeOnly := streamEvents(t, a, "?instance=ev%20two", "")
	defer closeOnly()

	rcDeploy(t, a, rcDeployBody(img, "ev one", "", nil, dtma.Port{ContainerPort: 8080}))
	got := nextUntil(t, all, "ev one healthy", func(e sseEvent) bool {
		return e.Data.Name == "ev one" && e.Data.Health != nil && *e.Data.Health == "healthy"
	})
	if got[0].Event != "instance" || got[0].Data.Type != dtma.EventCreated || got[0].Data.Name != "ev one" {
		t.Errorf("first event: %+v", got[0])
	}
	a.Expect(200, "POST", "/v1/instances/ev%20one/stop", nil)
	got = append(got, nextUntil(t, all, "ev one stopped", func(e sseEvent) bool { return e.Data.Name == "ev one" && e.Data.Status == dtma.StatusStopped })...)
	rcDeploy(t, a, rcDeployBody(img, "ev two", "", nil))
	a.Expect(204, "DELETE", "/v1/instances/ev%20one", nil)
	got = append(got, nextUntil(t, all, "ev one removed", func(e sseEvent) bool { return e.Data.Name == "ev one" && e.Data.Type == dtma.EventRemoved })...)
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			t.Fatalf("ids not increasing: %d then %d", got[i-1].ID, got[i].ID)
		}
	}
	// The filtered stream saw ev two only.
	f := nextUntil(t, only, "ev two created", func(e sseEvent) bool { return e.Data.Type == dtma.EventCreated })
	for _, e := range f {
		if e.Data.Name != "ev two" {
			t.Errorf("filtered stream got %+v", e)
		}
	}
	// Resume after the first event: the second comes next.
	resumed, closeR := streamEvents(t, a, "", strconv.FormatUint(got[0].ID, 10))
	defer closeR()
	if e := nextUntil(t, resumed, "a resumed event", func(sseEvent) bool { return true })[0]; e.ID != got[1].ID {
		t.Errorf("resumed with %+v, want id %d", e, got[1].ID)
	}
	// A client that goes away is unsubscribed.
	closeAll()
	closeOnly()
	closeR()
	Eventually(t, 30*time.Second, "no subscribers left", func() bool {
		v, ok := sample(scrape(t, a), "dtma_events_subscribers", nil)
		return ok && v == 0
	})
}

// TestEventsResyncBeyondBuffer: with DTMA_EVENT_BUFFER=2, a client
// resuming from an id no longer kept gets one resync event carrying the
// newest id, then live events.
func TestEventsResyncBeyondBuffer(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_EVENT_BUFFER=2"}})
	rcDeploy(t, a, rcDeployBody(img, "rs one", "", nil))
	a.Expect(200, "POST", "/v1/instances/rs%20one/stop", nil) // created, running, stopping, stopped: more than 2
	ch, closeFn := streamEvents(t, a, "", "1")
	defer closeFn()
	first := nextUntil(t, ch, "the resync event", func(sseEvent) bool { return true })[0]
	if first.Event != "resync" || first.ID < 4 {
		t.Fatalf("resuming beyond the buffer: %+v", first)
	}
	a.Expect(200, "POST", "/v1/instances/rs%20one/start", nil)
	next := nextUntil(t, ch, "a live event", func(sseEvent) bool { return true })[0]
	if next.Event != "instance" || next.ID <= first.ID {
		t.Fatalf("after the resync: %+v", next)
	}
}
