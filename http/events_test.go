package http

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// sse is one parsed Server-Sent Event.
type sse struct {
	id, event string
	data      EventJSON
	raw       string
}

// openEvents connects to GET /v1/events with the extra query and
// Last-Event-ID, and returns a reader of events.
func openEvents(t *testing.T, url, query, lastID string) (next func() sse, closeFn func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/events"+query, nil)
	req.Header.Set("Authorization", "Bearer tok")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	events := make(chan sse, 10000)
	go func() {
		defer close(events)
		var cur sse
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if cur.event != "" {
					events <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.raw = line[6:]
				_ = json.Unmarshal([]byte(cur.raw), &cur.data)
			}
		}
	}()
	next = func() sse {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				return sse{event: "EOF"}
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
		}
		return sse{}
	}
	return next, func() { cancel(); resp.Body.Close() }
}

func eventsServer(t *testing.T, hub *EventHub) string {
	t.Helper()
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}, Events: hub}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func ev(name string, st dtma.Status) dtma.Event {
	return dtma.Event{Type: dtma.EventChanged, Time: time.Now(), InstanceID: "id-" + name, Name: name, Status: st, Changed: []string{"status"}}
}

// waitSubs waits until the hub has n subscribers.
func waitSubs(t *testing.T, hub *EventHub, n int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		hub.mu.Lock()
		got := len(hub.subs)
		hub.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never %d subscribers", n)
}

func TestEventsOrderFilterResume(t *testing.T) {
	hub := &EventHub{Buffer: 5}
	url := eventsServer(t, hub)
	all, closeAll := openEvents(t, url, "", "")
	defer closeAll()
	onlyB, closeB := openEvents(t, url, "?instance=b", "")
	defer closeB()
	waitSubs(t, hub, 2)
	hub.Publish(ev("a", dtma.StatusDeploying))
	hub.Publish(ev("b", dtma.StatusDeploying))
	hub.Publish(ev("a", dtma.StatusRunning))
	for i, want := range []string{"a deploying", "b deploying", "a running"} {
		e := all()
		if e.event != "instance" || e.id != strconv.Itoa(i+1) || e.data.Name+" "+string(e.data.Status) != want {
			t.Fatalf("event %d: %+v, want id %d %s", i, e, i+1, want)
		}
	}
	if e := onlyB(); e.id != "2" || e.data.Name != "b" {
		t.Fatalf("filtered stream: %+v", e)
	}
	// Resume after id 1: ids 2 and 3 again, in order.
	resumed, closeR := openEvents(t, url, "", "1")
	defer closeR()
	if e := resumed(); e.id != "2" {
		t.Fatalf("resume: %+v", e)
	}
	if e := resumed(); e.id != "3" {
		t.Fatalf("resume: %+v", e)
	}
	// Beyond the buffer (5 kept): a resync carrying the newest id.
	for i := 0; i < 10; i++ {
		hub.Publish(ev("c", dtma.StatusRunning))
	}
	old, closeO := openEvents(t, url, "", "2")
	defer closeO()
	if e := old(); e.event != "resync" || e.id != "13" {
		t.Fatalf("beyond the buffer: %+v", e)
	}
	// A Last-Event-ID from another run (ahead of the hub) resyncs too.
	ahead, closeA := openEvents(t, url, "", "999")
	defer closeA()
	if e := ahead(); e.event != "resync" {
		t.Fatalf("id from the future: %+v", e)
	}
}

func TestEventsBadLastEventID(t *testing.T) {
	url := eventsServer(t, &EventHub{})
	req, _ := http.NewRequest("GET", url+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Last-Event-ID", "abc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error struct{ Code, Field string } }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 400 || body.Error.Field != "Last-Event-ID" {
		t.Fatalf("%d %+v", resp.StatusCode, body)
	}
	req.Header.Del("Last-Event-ID")
	req.Header.Del("Authorization")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 401 {
		t.Fatalf("no token: %d", resp2.StatusCode)
	}
}

// TestEventsSlowClientDropped: a subscriber that does not read never
// blocks Publish; it is dropped and its stream ends with "dropped".
func TestEventsSlowClientDropped(t *testing.T) {
	var drops atomic.Int32
	hub := &EventHub{Queue: 4, OnDrop: func() { drops.Add(1) }}
	url := eventsServer(t, hub)
	slow, closeSlow := openEvents(t, url, "", "")
	defer closeSlow()
	waitSubs(t, hub, 1)
	// One event read first, so the client has an id to resume from even
	// when the flood below fills its queue before its handler writes any
	// (a loaded machine): without one it would resume as a new client,
	// with nothing to receive.
	hub.Publish(ev("a", dtma.StatusRunning))
	first := slow()
	if first.event != "instance" || first.id == "" {
		t.Fatalf("first event: %+v", first)
	}
	// The reader goroutine of openEvents reads into a channel; block the
	// handler instead by publishing faster than it can write: a tight loop
	// of Publish always outruns one write+flush per event.
	n := 0
	for drops.Load() == 0 && n < 1_000_000 {
		hub.Publish(ev("a", dtma.StatusRunning))
		n++
	}
	if drops.Load() != 1 {
		t.Fatalf("no drop after %d events", n)
	}
	waitSubs(t, hub, 0)
	last := first.id
	for {
		e := slow()
		if e.event == "dropped" {
			break
		}
		if e.event != "instance" {
			t.Fatalf("before the drop: %+v", e)
		}
		last = e.id
	}
	if e := slow(); e.event != "EOF" {
		t.Fatalf("after dropped: %+v", e)
	}
	// It resumes from its last id.
	again, closeAgain := openEvents(t, url, "", last)
	defer closeAgain()
	if e := again(); e.event != "instance" && e.event != "resync" {
		t.Fatalf("resume after drop: %+v", e)
	}
}

// TestEventsDisconnect: a client that goes away is unsubscribed.
func TestEventsDisconnect(t *testing.T) {
	hub := &EventHub{}
	url := eventsServer(t, hub)
	_, closeFn := openEvents(t, url, "", "")
	waitSubs(t, hub, 1)
	closeFn()
	hub.Publish(ev("a", dtma.StatusRunning)) // a write to the dead connection may be what notices
	waitSubs(t, hub, 0)
}
