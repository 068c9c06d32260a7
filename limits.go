package dtma

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits bounds a tool container's resources. A zero field is "not set":
// in a request it means the host's default applies, in the limits a
// container is created with it means no limit.
type Limits struct {
	Memory    int64 `json:"memory,omitempty"`     // bytes (swap is not added on top)
	PIDs      int64 `json:"pids,omitempty"`       // processes and threads
	MilliCPUs int64 `json:"milli_cpus,omitempty"` // 1000 = one CPU
}

// Bounds on a per-deploy limit (Validate); a host may allow less (agent
// ceilings).
const (
	MinMemory    = 6 << 20 // Docker refuses less
	MaxMemory    = 1 << 40
	MinPIDs      = 16 // a Go or Node runtime starts several threads
	MaxPIDs      = 1 << 22
	MinMilliCPUs = 10 // 0.01 CPU
	MaxMilliCPUs = 1024 * 1000
)

// IsZero reports whether no field is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// Or returns l with every unset field taken from d.
func (l Limits) Or(d Limits) Limits {
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.PIDs == 0 {
		l.PIDs = d.PIDs
	}
	if l.MilliCPUs == 0 {
		l.MilliCPUs = d.MilliCPUs
	}
	return l
}

// String renders l for logs and messages: "memory=512m pids=256 cpus=1".
func (l Limits) String() string {
	var parts []string
	if l.Memory != 0 {
		parts = append(parts, "memory="+FormatMemory(l.Memory))
	}
	if l.PIDs != 0 {
		parts = append(parts, "pids="+strconv.FormatInt(l.PIDs, 10))
	}
	if l.MilliCPUs != 0 {
		parts = append(parts, "cpus="+FormatCPUs(l.MilliCPUs))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// ParseMemory reads a size the way Docker's --memory does: a whole number
// of bytes with an optional unit b, k, m, g or t (powers of 1024; "kb",
// "mib" and the like are accepted too), case-insensitive: "512m", "2g",
// "1048576". The error says what is wrong without quoting more than the
// input.
func ParseMemory(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("must be a size like 512m or 2g")
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("is too large")
	}
	return n * mult, nil
}

// FormatMemory renders bytes in the largest unit that divides them
// exactly: 536870912 is "512m".
func FormatMemory(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParseCPUs reads a CPU count like Docker's --cpus ("1", "0.5", "1.25")
// into thousandths of a CPU; more than three decimals is an error.
func ParseCPUs(s string) (int64, error) {
	t := strings.TrimSpace(s)
	whole, frac, _ := strings.Cut(t, ".")
	if whole == "" && frac == "" || len(frac) > 3 || strings.HasPrefix(whole, "-") || strings.HasPrefix(whole, "+") {
		return 0, fmt.Errorf("must be a number of CPUs like 1 or 0.5 (at most 3 decimals)")
	}
	w := int64(0)
	if whole != "" {
		n, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || n > MaxMilliCPUs {
			return 0, fmt.Errorf("must be a number of CPUs like 1 or 0.5 (at most 3 decimals)")
		}
		w = n
	}
	f := int64(0)
	if frac != "" {
		n, err := strconv.ParseInt(frac+strings.Repeat("0", 3-len(frac)), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("must be a number of CPUs like 1 or 0.5 (at most 3 decimals)")
		}
		f = n
	}
	return w*1000 + f, nil
}

// FormatCPUs renders thousandths of a CPU as a decimal: 1500 is "1.5".
func FormatCPUs(milli int64) string {
	return strconv.FormatFloat(float64(milli)/1000, 'f', -1, 64)
}

// ValidateLimits checks a per-deploy override against the static bounds.
// Fields are named limits.memory, limits.pids and limits.cpus; an unset
// (zero) field is valid.
func ValidateLimits(l Limits) error {
	switch {
	case l.Memory != 0 && l.Memory < MinMemory:
		return FieldErrorf(EINVALID, "limits.memory", "must be at least %s", FormatMemory(MinMemory))
	case l.Memory > MaxMemory:
		return FieldErrorf(EINVALID, "limits.memory", "must be at most %s", FormatMemory(MaxMemory))
	case l.PIDs != 0 && l.PIDs < MinPIDs:
		return FieldErrorf(EINVALID, "limits.pids", "must be at least %d", MinPIDs)
	case l.PIDs > MaxPIDs:
		return FieldErrorf(EINVALID, "limits.pids", "must be at most %d", MaxPIDs)
	case l.MilliCPUs != 0 && l.MilliCPUs < MinMilliCPUs:
		return FieldErrorf(EINVALID, "limits.cpus", "must be at least %s", FormatCPUs(MinMilliCPUs))
	case l.MilliCPUs > MaxMilliCPUs:
		return FieldErrorf(EINVALID, "limits.cpus", "must be at most %s", FormatCPUs(MaxMilliCPUs))
	}
	return nil
}
