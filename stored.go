package dtma

import "time"

// StoredForm returns a copy of inst as every Registry stores and returns
// it: times in UTC at microsecond precision (RegistryTime), ObservedAt zero
// (it lives in the agent's memory only), empty env and port lists nil. Two
// instances are the same row exactly when their stored forms are equal; the
// stores, import and the conformance suite all compare this way.
func StoredForm(inst *Instance) *Instance {
	c := inst.Clone()
	c.CreatedAt, c.UpdatedAt = RegistryTime(c.CreatedAt), RegistryTime(c.UpdatedAt)
	c.StartedAt, c.FinishedAt = RegistryTime(c.StartedAt), RegistryTime(c.FinishedAt)
	c.ObservedAt = time.Time{}
	// Health: only the persisted part (state, last error, time of change).
	c.Health = HealthStatus{State: c.Health.State, LastError: c.Health.LastError, ChangedAt: RegistryTime(c.Health.ChangedAt)}
	if len(c.Spec.Env) == 0 {
		c.Spec.Env = nil
	}
	if len(c.Spec.Ports) == 0 {
		c.Spec.Ports = nil
	}
	if len(c.Ports) == 0 {
		c.Ports = nil
	}
	return c
}
