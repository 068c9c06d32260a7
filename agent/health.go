package agent

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// health is what the agent last learnt of Docker's and the registry's
// reachability, and when it last observed Docker in full (a relist). It
// has its own lock.
type health struct {
	log *slog.Logger
	// dockerBack is called when Docker answers again after it did not
	// (the agent asks for a relist).
	dockerBack func()

	mu             sync.Mutex
	dockerErr      error
	registryErr    error
	lastObservedAt time.Time
}

// noteRegistry records the registry's health from a call's outcome: nil
// says it answered, EUNAVAILABLE that it did not; any other error (a
// conflict, not found) also says it answered and is ignored.
func (h *health) noteRegistry(err error) {
	if err != nil && dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		return
	}
	h.mu.Lock()
	h.registryErr = err
	h.mu.Unlock()
}

// noteDocker records Docker's health from a call's outcome: nil says it
// answered, EUNAVAILABLE that it did not. Any other error says nothing
// new and is ignored, and so is a failure of an image registry
// (dtma.ErrRegistry), which says nothing about Docker. Docker answering
// again after it did not calls dockerBack.
func (h *health) noteDocker(err error) {
	if err != nil && (dtma.ErrorCode(err) != dtma.EUNAVAILABLE || errors.Is(err, dtma.ErrRegistry)) {
		return
	}
	h.mu.Lock()
	prev := h.dockerErr
	h.dockerErr = err
	h.mu.Unlock()
	if prev == nil && err != nil {
		h.log.Error("docker unreachable", "err", err)
	} else if prev != nil && err == nil {
		h.log.Info("docker reachable again")
		if h.dockerBack != nil {
			h.dockerBack()
		}
	}
}

// observed records that Docker was observed in full at t.
func (h *health) observed(t time.Time) {
	h.mu.Lock()
	h.lastObservedAt = t
	h.mu.Unlock()
}

// report fills in h's part of a dtma.Health.
func (h *health) report(out *dtma.Health) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out.DockerOK = h.dockerErr == nil
	out.RegistryOK = h.registryErr == nil
	out.LastObservedAt = h.lastObservedAt
	if h.dockerErr != nil {
		out.DockerError = dtma.ErrorMessage(h.dockerErr)
	}
	if h.registryErr != nil {
		out.RegistryError = dtma.ErrorMessage(h.registryErr)
	}
}
