package agent

import (
	"github.com/agentopia/dtma"
)

// confinement returns the resource limits and the capabilities a container
// for spec is created with: each limit from the spec's own override, else
// the policy rule matching its image, else the host default; capabilities
// dtma.DefaultCapabilities plus the rule's. It is computed at every create
// (deploy and recreate), so a container takes the host's current defaults
// and policy when it is next recreated, never while it runs.
func (a *Agent) confinement(spec dtma.Spec) (dtma.Limits, []string) {
	limits := spec.Limits
	caps := dtma.DefaultCapabilities()
	if rule := a.cfg.Policy.Match(spec.Image); rule != nil {
		limits = limits.Or(rule.Limits)
		for _, c := range rule.CapAdd {
			if !containsString(caps, c) {
				caps = append(caps, c)
			}
		}
	}
	return limits.Or(a.cfg.DefaultLimits), caps
}

// checkLimits refuses a per-deploy override above this host's ceiling
// (MaxLimits, raised by a policy rule matching the image): EINVALID naming
// limits.memory, limits.pids or limits.cpus.
func (a *Agent) checkLimits(spec dtma.Spec) error {
	ceiling := a.cfg.MaxLimits
	if rule := a.cfg.Policy.Match(spec.Image); rule != nil {
		ceiling.Memory = max(ceiling.Memory, rule.Limits.Memory)
		ceiling.PIDs = max(ceiling.PIDs, rule.Limits.PIDs)
		ceiling.MilliCPUs = max(ceiling.MilliCPUs, rule.Limits.MilliCPUs)
	}
	l := spec.Limits
	switch {
	case ceiling.Memory > 0 && l.Memory > ceiling.Memory:
		return dtma.FieldErrorf(dtma.EINVALID, "limits.memory", "must be at most %s on this host", dtma.FormatMemory(ceiling.Memory))
	case ceiling.PIDs > 0 && l.PIDs > ceiling.PIDs:
		return dtma.FieldErrorf(dtma.EINVALID, "limits.pids", "must be at most %d on this host", ceiling.PIDs)
	case ceiling.MilliCPUs > 0 && l.MilliCPUs > ceiling.MilliCPUs:
		return dtma.FieldErrorf(dtma.EINVALID, "limits.cpus", "must be at most %s on this host", dtma.FormatCPUs(ceiling.MilliCPUs))
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
